"""The OCP error class tree.

`OcpError` is the root and carries `.response_code`, the code the peer gets in an `Error`.
`OcpLocalError` is our own misuse of the `Connection` (a bug in the caller); `OcpRemoteError`
means the peer broke the protocol, and has one subclass per protocol error code the codec
raises. The decoder raises nothing else: a msgspec, struct or Unicode error escaping it is a bug.
Declines (INSUFFICIENT_FUNDS...) are results, never exceptions.
"""

from __future__ import annotations

from typing import ClassVar

from protocols.ocp._codes import ResponseCode


class OcpError(Exception):
    """Root of every OCP error."""

    response_code: ClassVar[ResponseCode] = ResponseCode.SYSTEM_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OcpLocalError(OcpError):
    """We misused the connection: `send()` in the wrong state, a bad key length, data after EOF.

    Raising it changes nothing in the connection; fix the caller.
    """


class OcpRemoteError(OcpError):
    """The peer violated the protocol.

    Unless `closes_connection` is false, the connection is now in `State.ERROR`: `send()` allows
    exactly one `Error(code=exc.response_code)`, then the caller closes the socket.
    """

    closes_connection: bool = True
    txn_seq: int = 0
    """The txn_seq of the refused request when known, else 0: echo it in `Error.txn_seq`."""

    def __init__(self, message: str, *, closes_connection: bool = True, txn_seq: int = 0) -> None:
        super().__init__(message)
        self.closes_connection = closes_connection
        self.txn_seq = txn_seq


class InvalidField(OcpRemoteError):
    """An authentic message failed its schema; `.path` is msgspec's path (`$.amount_fen`).

    Never closes the connection: only this request is refused. (Outside a session the same
    failure is a MalformedFrame.)
    """

    response_code = ResponseCode.INVALID_FIELD

    def __init__(
        self, message: str, *, path: str, closes_connection: bool = False, txn_seq: int = 0
    ) -> None:
        super().__init__(message, closes_connection=closes_connection, txn_seq=txn_seq)
        self.path = path


class UnknownMessage(OcpRemoteError):
    """A well-formed frame whose tag this implementation does not know (`.tag`).

    Never closes the connection: only this message is refused. (Outside a session the same
    frame is an UnexpectedMessage.)
    """

    response_code = ResponseCode.UNKNOWN_MESSAGE

    def __init__(
        self, message: str, *, tag: int, closes_connection: bool = False, txn_seq: int = 0
    ) -> None:
        super().__init__(message, closes_connection=closes_connection, txn_seq=txn_seq)
        self.tag = tag


class MalformedFrame(OcpRemoteError):
    """The frame or its body cannot be parsed."""

    response_code = ResponseCode.MALFORMED_FRAME


class FrameTooLarge(OcpRemoteError):
    """The length prefix is above the limit; raised before the body is buffered."""

    response_code = ResponseCode.FRAME_TOO_LARGE


class UnsupportedVersion(OcpRemoteError):
    """The frame version byte is not 1."""

    response_code = ResponseCode.UNSUPPORTED_VERSION


class BadMac(OcpRemoteError):
    """The MAC is missing or does not verify."""

    response_code = ResponseCode.BAD_MAC


class SequenceError(OcpRemoteError):
    """The frame sequence is not exactly the previous one plus 1 (replay, repeat or skip)."""

    response_code = ResponseCode.SEQUENCE_ERROR


class NotSignedOn(OcpRemoteError):
    """A request arrived before the sign-on completed."""

    response_code = ResponseCode.NOT_SIGNED_ON


class UnexpectedMessage(OcpRemoteError):
    """A known message the state table does not allow in this state or direction."""

    response_code = ResponseCode.UNEXPECTED_MESSAGE


def remote_error_classes() -> dict[ResponseCode, type[OcpRemoteError]]:
    """The concrete OcpRemoteError class of each protocol error code the codec raises."""
    classes: dict[ResponseCode, type[OcpRemoteError]] = {}
    for cls in OcpRemoteError.__subclasses__():
        assert cls.response_code not in classes, f"two classes for {cls.response_code!r}"
        classes[cls.response_code] = cls
    return classes


REMOTE_ERROR_CLASSES = remote_error_classes()

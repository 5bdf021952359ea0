"""The bank link's error class tree.

`Iso8583Error` is the root and carries `.field39`, the code a peer would be answered with.
`Iso8583LocalError` is our own misuse (a value that does not fit its field, no MAC key);
`Iso8583RemoteError` means the peer sent something the spec refuses, and has one subclass per
kind of refusal. The decoder raises nothing else. Declines are results (field 39), never
exceptions.
"""

from __future__ import annotations

from typing import ClassVar


class Iso8583Error(Exception):
    """Root of every bank-link protocol error."""

    field39: ClassVar[str] = "96"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Iso8583LocalError(Iso8583Error):
    """We misused the codec: a value outside its field, a MAC'd message without a key."""


class Iso8583RemoteError(Iso8583Error):
    """The peer broke the spec.

    `closes_connection` true: the byte stream can no longer be trusted (a frame over the size
    limit); the connection is closed. False: the frame's boundaries were sound, only this
    message is dropped and the link stays up. `reason` is the metric label.
    """

    closes_connection: bool = False
    reason: ClassVar[str] = "malformed"
    mti: str = ""
    """The message type, when it could be read (else "")."""

    def __init__(self, message: str, *, mti: str = "") -> None:
        super().__init__(message)
        self.mti = mti


class FrameTooLarge(Iso8583RemoteError):
    """The length header announces more than FRAME_BYTES_MAX (or zero bytes)."""

    field39 = "30"
    reason = "frame_too_large"
    closes_connection = True


class MalformedMessage(Iso8583RemoteError):
    """Wrong bitmap, a short or over-long field, bad digits, a field missing or not allowed
    in this message, bytes after the last field."""

    field39 = "30"
    reason = "malformed"


class UnknownMti(Iso8583RemoteError):
    """An MTI the spec does not list."""

    field39 = "12"
    reason = "unknown_mti"


class BadMac(Iso8583RemoteError):
    """Field 128 is missing or does not verify, or field 53 names a key we do not hold."""

    field39 = "63"
    reason = "bad_mac"


class BadKey(Iso8583RemoteError):
    """A wrapped key that does not unwrap under the key-encryption key (RFC 3394 check)."""

    field39 = "63"
    reason = "bad_key"


REMOTE_ERROR_CLASSES: tuple[type[Iso8583RemoteError], ...] = (
    FrameTooLarge, MalformedMessage, UnknownMti, BadMac, BadKey)
REMOTE_ERROR_REASONS: tuple[str, ...] = tuple(cls.reason for cls in REMOTE_ERROR_CLASSES)

"""DoorCommand (36) and DoorCommandAck (37) in the sans-IO codec and state machine
(docs/protocol.md 4.5 and 10), and the simulated door's side (terminals_sim.DoorControl).

Round trips of every field value are in tests/test_ocp_roundtrip.py (both messages are in its
session sets); the frozen bytes are Appendix A.7's vectors (tests/test_ocp_vectors.py). Here:
where each may travel, what an older terminal does with tag 36, and mutated command frames.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import limits, ocp
from terminals_sim import DoorControl
from tests.ocp_pair import ConnectionPair, signed_on_pair

A = ocp.DoorCommandAction
C = ocp.DoorCommandCode
RC = ocp.ResponseCode


def test_a_command_goes_to_a_signed_on_terminal_only() -> None:
    pair = ConnectionPair()
    with pytest.raises(ocp.OcpLocalError):
        pair.switch.send(ocp.DoorCommand(1, 1, A.OPEN_ONCE, 3000))
    pair.sign_on()
    assert pair.s2t(ocp.DoorCommand(1, 1, A.OPEN_ONCE, 3000)) == [
        ocp.DoorCommand(1, 1, A.OPEN_ONCE, 3000)]
    assert pair.t2s(ocp.DoorCommandAck(1, C.DONE, 5)) == [ocp.DoorCommandAck(1, 0, 5)]
    assert pair.switch.state is ocp.State.READY and pair.terminal.state is ocp.State.READY


def test_a_command_crossing_a_sign_off_is_taken_and_cannot_be_acked() -> None:
    pair = signed_on_pair()
    sign_off = pair.terminal.send(ocp.SignOff())
    command = pair.switch.send(ocp.DoorCommand(2, 1, A.HOLD_LOCKED))
    assert pair.to_terminal(command) == [ocp.DoorCommand(2, 1, A.HOLD_LOCKED, 0)]
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(ocp.DoorCommandAck(2, C.DONE))
    pair.to_switch(sign_off)
    with pytest.raises(ocp.OcpLocalError):  # the switch sends none after a SignOff
        pair.switch.send(ocp.DoorCommand(3, 1, A.NORMAL))


class _RawCommand(ocp.Message, tag=36, frozen=True):
    """Tag 36 with its fields unconstrained: what a broken switch could put on the wire."""

    command_id: int
    reader_no: int
    action: int
    open_ms: int


class _LaterMessage(ocp.Message, tag=47, frozen=True):
    """A switch-to-door message of a later revision (tag 47, reserved today): to this codec
    it is what tag 36 is to an older door's."""

    command_id: int
    reader_no: int


def _decode_plain(msg: ocp.Message) -> ocp.Message:
    return ocp.decode_frame(ocp.encode_frame(msg, sequence=0))[1]


def test_the_terminal_never_sends_a_command_nor_the_switch_an_ack() -> None:
    pair = signed_on_pair()
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(ocp.DoorCommand(1, 1, A.OPEN_ONCE))
    with pytest.raises(ocp.OcpLocalError):
        pair.switch.send(ocp.DoorCommandAck(1, 0))
    for kind, sent in ocp.TERMINAL_KIND_MESSAGES.items():
        assert (ocp.DoorCommandAck in sent) == (kind is ocp.TerminalKind.DOOR)
        assert ocp.DoorCommand not in sent


def test_an_older_terminal_names_the_command_in_its_unknown_message_error() -> None:
    """A codec without a tag sees element 1 as the txn_seq of its Error (rule 4.2.5), so an
    older door's UNKNOWN_MESSAGE names the command_id; it does not close the connection."""
    with pytest.raises(ocp.UnknownMessage) as exc:
        _decode_plain(_LaterMessage(77, 1))
    assert exc.value.txn_seq == 77 and not exc.value.closes_connection
    pair = signed_on_pair()
    pair.s2t(ocp.DoorCommand(77, 1, A.OPEN_ONCE, 3000))
    error = ocp.Error(RC.UNKNOWN_MESSAGE, 77, "unknown message tag 36")
    assert pair.t2s(error) == [error]
    assert pair.switch.state is ocp.State.READY and pair.terminal.state is ocp.State.READY


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 + 5), st.integers(-1, 20), st.integers(-1, 6),
       st.integers(-1, limits.OPEN_MS_MAX + 1))
def test_decoding_any_command_validates_or_refuses_naming_it(
        cid: int, reader: int, action: int, open_ms: int) -> None:
    valid = (1 <= cid <= limits.TXN_SEQ_MAX and 1 <= reader <= limits.READER_NO_MAX
             and 1 <= action <= 4 and 0 <= open_ms <= limits.OPEN_MS_MAX)
    try:
        msg = _decode_plain(_RawCommand(cid, reader, action, open_ms))
    except ocp.InvalidField as exc:
        assert not valid
        # The Error refusing it names the command when its command_id is readable.
        assert exc.txn_seq == (cid if 1 <= cid <= limits.TXN_SEQ_MAX else 0)
        assert exc.path in ("$.command_id", "$.reader_no", "$.action", "$.open_ms")
    else:
        assert valid and msg == ocp.DoorCommand(cid, reader, action, open_ms)


# -- the simulated door (terminals_sim.DoorControl) ----------------------------------------


def test_the_simulated_door_carries_out_commands_once() -> None:
    door = DoorControl(readers={1, 2})
    assert door.command(ocp.DoorCommand(1, 1, A.OPEN_ONCE, 3000), now_ms=10) == \
        ocp.DoorCommandAck(1, C.DONE, 10)
    assert door.opened == [(1, 10, 3000)]
    assert door.events == [(1, ocp.DoorEventCode.OPENED), (1, ocp.DoorEventCode.CLOSED)]
    assert door.command(ocp.DoorCommand(1, 1, A.OPEN_ONCE, 3000)).code == C.DONE
    assert len(door.opened) == 1, "a repeated command_id is not carried out again"
    assert door.command(ocp.DoorCommand(2, 2, A.HOLD_LOCKED)).code == C.DONE
    assert not door.may_open(2) and door.may_open(1)
    assert door.command(ocp.DoorCommand(3, 2, A.OPEN_ONCE, 3000)).code == C.REFUSED
    assert door.command(ocp.DoorCommand(4, 2, A.HOLD_OPEN)).code == C.DONE
    assert door.mode(2) == "held_open"
    assert door.command(ocp.DoorCommand(5, 2, A.NORMAL)).code == C.DONE
    assert door.mode(2) == "normal"
    assert door.command(ocp.DoorCommand(6, 9, A.NORMAL)).code == C.NO_SUCH_READER
    assert DoorControl(lock_fault=True).command(
        ocp.DoorCommand(7, 1, A.OPEN_ONCE, 3000)).code == C.LOCK_FAULT


def test_command_ids_are_unique_within_a_session_only() -> None:
    """protocol.md 4.5: a new session may reuse an id of an earlier one (another switch
    process's mode holds): after `new_session()` it is a new command, carried out."""
    door = DoorControl(readers={1})
    assert door.command(ocp.DoorCommand(2**32 - 1, 1, A.HOLD_OPEN)).code == C.DONE
    assert door.mode(1) == "held_open"
    # The same id again in the same session: the first answer, nothing done.
    assert door.command(ocp.DoorCommand(2**32 - 1, 1, A.HOLD_LOCKED)).code == C.DONE
    assert door.mode(1) == "held_open"
    door.new_session()  # a sign-on: the switch restarted and counts its holds afresh
    assert door.command(ocp.DoorCommand(2**32 - 1, 1, A.HOLD_LOCKED)).code == C.DONE
    assert door.mode(1) == "held_locked" and not door.may_open(1)


def test_open_once_with_open_ms_0_or_while_held_open() -> None:
    """protocol.md 4.5: open_ms 0 means the door's own default; OPEN_ONCE during HOLD_OPEN
    is DONE and changes nothing (no opening, no events)."""
    door = DoorControl(readers={1}, default_open_ms=2500)
    assert door.command(ocp.DoorCommand(1, 1, A.OPEN_ONCE, 0), now_ms=7).code == C.DONE
    assert door.opened == [(1, 7, 2500)]
    assert door.command(ocp.DoorCommand(2, 1, A.HOLD_OPEN)).code == C.DONE
    events = list(door.events)
    assert door.command(ocp.DoorCommand(3, 1, A.OPEN_ONCE, 4000)).code == C.DONE
    assert door.mode(1) == "held_open" and len(door.opened) == 1 and door.events == events

"""ConnectionPair: a terminal and a switch `ocp.Connection` joined in memory (like h11's
tests/helpers.py), plus helpers to drain events. No sockets: bytes are handed over directly."""

from __future__ import annotations

from protocols import ocp

MASTER_SECRET = bytes(range(32))
TERMINAL_ID = 1001
TERMINAL_KEY = ocp.derive_terminal_key(MASTER_SECRET, TERMINAL_ID, 1)
TERMINAL_NONCE = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
SWITCH_NONCE = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")


def drain(conn: ocp.Connection, data: bytes, *, byte_at_a_time: bool = False) -> list:
    """Feed `data` (b"" = EOF) and return every event up to NEED_DATA (or CLOSED, included)."""
    events: list = []
    chunks = [data[i : i + 1] for i in range(len(data))] if byte_at_a_time else [data]
    for chunk in chunks:
        conn.receive_data(chunk)  # b"" is EOF
        while True:
            ev = conn.next_event()
            if ev is ocp.NEED_DATA:
                break
            events.append(ev)
            if ev is ocp.CLOSED:
                return events
    return events


class ConnectionPair:
    def __init__(
        self,
        *,
        terminal_id: int = TERMINAL_ID,
        terminal_key: bytes = TERMINAL_KEY,
        switch_key: bytes | None = None,
        terminal_nonce: bytes = TERMINAL_NONCE,
        switch_nonce: bytes = SWITCH_NONCE,
    ) -> None:
        self.terminal = ocp.Connection(ocp.Role.TERMINAL)
        self.switch = ocp.Connection(ocp.Role.SWITCH)
        self.terminal_id = terminal_id
        self.terminal_key = terminal_key
        self.switch_key = terminal_key if switch_key is None else switch_key
        self.terminal_nonce = terminal_nonce
        self.switch_nonce = switch_nonce
        self.wire: list[tuple[str, bytes]] = []
        """Every frame handed over, as ("t2s" | "s2t", bytes), in order."""

    def to_switch(self, data: bytes, **kw: bool) -> list:
        self.wire.append(("t2s", data))
        return drain(self.switch, data, **kw)

    def to_terminal(self, data: bytes, **kw: bool) -> list:
        self.wire.append(("s2t", data))
        return drain(self.terminal, data, **kw)

    def t2s(self, *msgs: ocp.Message, **kw: bool) -> list:
        """Send messages terminal -> switch in one chunk; the switch's events."""
        return self.to_switch(b"".join(self.terminal.send(m) for m in msgs), **kw)

    def s2t(self, *msgs: ocp.Message, **kw: bool) -> list:
        return self.to_terminal(b"".join(self.switch.send(m) for m in msgs), **kw)

    def sign_on(
        self,
        *,
        last_txn_seq: int = 0,
        result: ocp.SignOnResult | None = None,
        confirm: ocp.SignOnConfirm | None = None,
    ) -> None:
        """The whole handshake; both ends READY afterwards (unless `result` declines)."""
        (sign_on,) = self.to_switch(
            self.terminal.start_sign_on(self.terminal_id, self.terminal_key, self.terminal_nonce)
        )
        assert sign_on == ocp.SignOn(self.terminal_id, self.terminal_nonce)
        assert self.switch.terminal_id == self.terminal_id
        (challenge,) = self.to_terminal(
            self.switch.accept_sign_on(self.switch_key, self.switch_nonce)
        )
        assert challenge == ocp.SignOnChallenge(self.switch_nonce)
        confirm = confirm or ocp.SignOnConfirm(last_txn_seq, ocp.TerminalKind.POS, "test-1.0")
        assert self.t2s(confirm) == [confirm]
        result = result or ocp.SignOnResult(ocp.ResponseCode.APPROVED, 1_700_000_000_000, 0, 30)
        assert self.s2t(result)[:1] == [result]
        if result.code == ocp.ResponseCode.APPROVED:
            assert self.terminal.state is ocp.State.READY
            assert self.switch.state is ocp.State.READY


def signed_on_pair() -> ConnectionPair:
    pair = ConnectionPair()
    pair.sign_on()
    return pair

"""Phone QR codes at the switch: the site's QR key, and which codes have been used.

A QR code (protocols/qr.py) is used once: it pays once at a till or opens once at a door
(docs/access.md, "Phone QR codes at doors"), not both. The gate remembers every code used, as
(card_no, nonce) -> (terminal_id, txn_seq) of the purchase it paid or the door decision it
counted for, until the code could no longer pass the clock check anyway (`qr.forget_after`);
then it forgets it. Memory is bounded:
at most `nonces_max` codes are remembered; when that many are live, new QR purchases are refused
BUSY (retry with the same txn_seq) rather than taken on trust.

The purchases' part of the table lives in this process only. After a restart the switch cannot
know which codes paid before it, so it accepts only codes issued since it started
(`issued_s >= started_s`): a code shown across a restart must be refreshed (QR_EXPIRED). Codes
used at doors are journaled (the decision record names the code's nonce, never the code) and
`restore` puts them back at start, so a door's QR code replayed after a restart is refused
QR_USED, not merely QR_EXPIRED. A failed commit does not restart the
process: the table outlives the recovery that follows, so a code whose purchase did not commit
stays spent (its own request, retried with the same txn_seq, still pays with it).

The decision order, and why, is docs/protocol.md section 4.4; the session (`_session.py`,
`_qr_purchase`) applies it.
"""

from __future__ import annotations

import heapq

from protocols import qr
from switch import limits


class QrGate:
    __slots__ = ("_forget", "_used", "key", "nonces_max", "started_s")

    def __init__(self, master_secret: bytes, started_s: int,
                 nonces_max: int = limits.QR_NONCES_MAX) -> None:
        self.key = qr.derive_qr_key(master_secret)
        self.started_s = started_s
        self.nonces_max = nonces_max
        self._used: dict[tuple[int, bytes], tuple[int, int]] = {}
        # (forget after this second, card_no, nonce), a heap: the next code to forget on top.
        self._forget: list[tuple[int, int, bytes]] = []

    def __len__(self) -> int:
        return len(self._used)

    def _expire(self, now_s: int) -> None:
        heap = self._forget
        used = self._used
        while heap and heap[0][0] < now_s:
            _, card_no, nonce = heapq.heappop(heap)
            used.pop((card_no, nonce), None)

    def paid_by(self, token: qr.QrToken, now_s: int) -> tuple[int, int] | None:
        """(terminal_id, txn_seq) of the purchase this code paid, or None."""
        self._expire(now_s)
        return self._used.get((token.card_no, token.nonce))

    def time_problem(self, token: qr.QrToken, now_s: int) -> str | None:
        """Why the code may not pay at `now_s` (QR_EXPIRED), or None."""
        try:
            qr.check_time(token, now_s)
        except qr.QrExpired as exc:
            return str(exc)
        if token.issued_s < self.started_s:
            return ("the QR code was issued before the switch started, which cannot tell "
                    "whether it has paid: refresh it")
        return None

    @property
    def full(self) -> bool:
        return len(self._used) >= self.nonces_max

    def spend(self, token: qr.QrToken, terminal_id: int, txn_seq: int) -> None:
        """The code paid (terminal_id, txn_seq): remember it until it cannot pass the clock."""
        self.restore(token.card_no, token.nonce, qr.forget_after(token), terminal_id, txn_seq)

    def restore(self, card_no: int, nonce: bytes, forget_s: int, terminal_id: int,
                txn_seq: int) -> None:
        """A code used by (terminal_id, txn_seq), remembered until `forget_s`."""
        key = (card_no, nonce)
        if key not in self._used:
            heapq.heappush(self._forget, (forget_s, card_no, nonce))
        self._used[key] = (terminal_id, txn_seq)


def door_credential(token: qr.QrToken) -> str:
    """What a door decision on a QR code journals in `access_decisions.credential`: the nonce
    and when the code may be forgotten, never the code (which a reader of the table could
    replay at a till while it is valid)."""
    return f"qr:{token.nonce.hex()}:{qr.forget_after(token)}"


def parse_door_credential(text: str) -> tuple[bytes, int] | None:
    """(nonce, forget after) of `door_credential`'s text, or None."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != "qr":
        return None
    try:
        return bytes.fromhex(parts[1]), int(parts[2])
    except ValueError:
        return None

"""A small blocking OCP terminal for tests: a real socket, the real sans-IO Connection."""

from __future__ import annotations

import os
import socket
from typing import Any

from protocols import ocp


class OcpClient:
    def __init__(self, host: str, port: int, terminal_id: int, key: bytes,
                 timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.terminal_id = terminal_id
        self.key = key
        self.sign_on_result: Any = None

    def sign_on(self, last_txn_seq: int = 0) -> Any:
        self.sock.sendall(self.conn.start_sign_on(self.terminal_id, self.key, os.urandom(16)))
        challenge = self.next_message()
        assert isinstance(challenge, ocp.SignOnChallenge), challenge
        self.sock.sendall(self.conn.send(ocp.SignOnConfirm(last_txn_seq, 1, "test")))
        self.sign_on_result = self.next_message()
        return self.sign_on_result

    def next_message(self) -> Any:
        """The next message from the switch; ocp.CLOSED when the switch closed the socket."""
        while True:
            ev = self.conn.next_event()
            if ev is not ocp.NEED_DATA:
                return ev
            data = self.sock.recv(65536)
            self.conn.receive_data(data)

    def send(self, msg: Any) -> None:
        self.sock.sendall(self.conn.send(msg))

    def request(self, msg: Any) -> Any:
        self.send(msg)
        return self.next_message()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self) -> list[Any]:
        """Every message until the switch closes the connection."""
        out = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return out
            if not data:
                return out
            self.conn.receive_data(data)
            while True:
                try:
                    ev = self.conn.next_event()
                except ocp.OcpError:
                    return out
                if ev is ocp.NEED_DATA or ev is ocp.CLOSED:
                    break
                out.append(ev)

    def close(self) -> None:
        self.sock.close()

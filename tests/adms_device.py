"""A ZKTeco-style ADMS push device, emulated from the public protocol description.

It does what such a terminal does over HTTP: on power-on GET /iclock/cdata?SN=..&options=all
(and reads the stamps it should resume after), poll GET /iclock/getrequest for commands,
apply user commands to its own user table and answer them on POST /iclock/devicecmd, and push
attendance records on POST /iclock/cdata?table=ATTLOG&Stamp=.. as tab-separated lines.
"""

from __future__ import annotations

import datetime as dt

import httpx

from protocols import adms


class AdmsDevice:
    def __init__(self, base_url: str, serial_no: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10,
                                 headers={"User-Agent": "iClock Proxy/1.09"})
        self.serial_no = serial_no
        self.users: dict[str, dict[str, str]] = {}
        self.options: dict[str, str] = {}
        self.stamp = 0

    def power_on(self) -> httpx.Response:
        r = self.http.get("/iclock/cdata", params={"SN": self.serial_no, "options": "all",
                                                   "pushver": "2.4.1", "language": "69"})
        if r.status_code == 200:
            for line in r.text.splitlines()[1:]:
                key, _, value = line.partition("=")
                self.options[key] = value
            self.stamp = int(self.options.get("ATTLOGStamp", "0") or 0)
        return r

    def poll(self) -> int:
        """One poll: apply the commands handed out, answer them; how many there were."""
        r = self.http.get("/iclock/getrequest", params={"SN": self.serial_no})
        r.raise_for_status()
        commands = adms.parse_commands(r.text)
        replies = []
        for cid, command in commands:
            fields = adms.parse_user_command(command)
            if fields["op"] == "UPDATE":
                self.users[fields["PIN"]] = fields
            elif fields["op"] == "DELETE":
                self.users.pop(fields["PIN"], None)
            replies.append(f"ID={cid}&Return=0&CMD=DATA")
        if replies:
            a = self.http.post("/iclock/devicecmd", params={"SN": self.serial_no},
                               content="\n".join(replies) + "\n")
            assert a.text == "OK", a.text
        return len(commands)

    def sync(self) -> None:
        """Poll until no command is waiting."""
        for _ in range(100):
            if self.poll() == 0:
                return
        raise AssertionError("the server kept sending commands")

    def push_attlog(self, rows: list[tuple[str, dt.datetime, int, int]]) -> httpx.Response:
        self.stamp += len(rows)
        body = "".join(f"{pin}\t{at:%Y-%m-%d %H:%M:%S}\t{status}\t{verify}\t0\t0\t0\n"
                       for pin, at, status, verify in rows)
        return self.http.post("/iclock/cdata", params={"SN": self.serial_no, "table": "ATTLOG",
                                                       "Stamp": str(self.stamp)}, content=body)

    def close(self) -> None:
        self.http.close()

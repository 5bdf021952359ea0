"""A ZKTeco-style ADMS push device, emulated from the public protocol description.

It does what such a terminal does over HTTP: on power-on GET /iclock/cdata?SN=..&options=all
(and reads the stamps it should resume after), poll GET /iclock/getrequest for commands,
apply user and template commands to its own tables and answer them on POST /iclock/devicecmd,
push attendance records on POST /iclock/cdata?table=ATTLOG&Stamp=.. as tab-separated lines,
and push templates enrolled at it (OPERLOG `FP`/`FACE` lines from a push 2.x device, BIODATA
lines from a 3.x one).

Like a real terminal it refuses (Return=-1) a template for a user it does not hold, so a
server that sends templates before their user is caught. `pushver` decides its dialect:
below 3, FINGERTMP/FACE; from 3, BIODATA.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import httpx

from protocols import adms


class AdmsDevice:
    def __init__(self, base_url: str, serial_no: str, *, pushver: str = "2.4.1") -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10,
                                 headers={"User-Agent": "iClock Proxy/1.09"})
        self.serial_no = serial_no
        self.pushver = pushver
        self.users: dict[str, dict[str, str]] = {}
        self.templates: dict[tuple[str, int, int, int], bytes] = {}
        """(PIN, bio type, finger number, index) -> the template."""
        self.options: dict[str, str] = {}
        self.stamp = 0
        self.applied: list[str] = []
        """Every command applied, in order (what a test may check the order of)."""

    @property
    def biodata(self) -> bool:
        return int(self.pushver.split(".")[0]) >= 3

    def power_on(self) -> httpx.Response:
        r = self.http.get("/iclock/cdata", params={"SN": self.serial_no, "options": "all",
                                                   "pushver": self.pushver, "language": "69"})
        if r.status_code == 200:
            for line in r.text.splitlines()[1:]:
                key, _, value = line.partition("=")
                self.options[key] = value
            self.stamp = int(self.options.get("ATTLOGStamp", "0") or 0)
        return r

    def _apply(self, command: str) -> int:
        """Apply one DATA command as a terminal does; its return code."""
        op, table, f = adms.parse_data_command(command)
        pin = f.get("pin", "")
        if table == "USERINFO":
            if op == "UPDATE":
                self.users[pin] = adms.parse_user_command(command)
            else:
                self.users.pop(pin, None)
                self.templates = {k: v for k, v in self.templates.items() if k[0] != pin}
            return 0
        if op == "UPDATE" and pin not in self.users:
            return -1  # a template of a user the terminal does not hold
        if table in ("FINGERTMP", "FACE"):
            if self.biodata and table == "FACE":
                return -1
            fid = int(f.get("fid", "0") or 0)
            slot = (pin, 1, fid, 0) if table == "FINGERTMP" else (pin, 2, 0, fid)
            if op == "UPDATE":
                data = base64.b64decode(f["tmp"])
                assert int(f["size"]) == len(f["tmp"]), "Size is the base64 text's length"
                self.templates[slot] = data
            elif table == "FACE":
                self.templates = {k: v for k, v in self.templates.items()
                                  if not (k[0] == pin and k[1] == 2)}
            else:
                self.templates.pop(slot, None)
            return 0
        if table == "BIOPHOTO":
            if not self.biodata:
                return -1
            if op == "UPDATE":
                assert int(f["size"]) == len(f["content"]), "Size is the base64 text's length"
                self.templates[(pin, 0, 0, 0)] = base64.b64decode(f["content"])
            else:
                self.templates.pop((pin, 0, 0, 0), None)
            return 0
        if table == "BIODATA":
            if not self.biodata:
                return -1  # an old firmware knows no BIODATA table
            slot = (pin, int(f["type"]), int(f.get("no", "0")), int(f.get("index", "0")))
            if op == "UPDATE":
                self.templates[slot] = base64.b64decode(f["tmp"])
            else:
                self.templates.pop(slot, None)
            return 0
        return -1

    def poll(self, *, ack: bool = True, apply: bool = True,
             refuse: Callable[[str], int] | None = None) -> int:
        """One poll: apply the commands handed out, answer them; how many there were.
        `ack=False`: the answer is lost (the device applied them, the server never heard);
        `apply=False` with it: the device crashed before applying; `refuse`: the return code
        the device gives a command instead of applying it (0: apply)."""
        r = self.http.get("/iclock/getrequest", params={"SN": self.serial_no})
        r.raise_for_status()
        commands = adms.parse_commands(r.text)
        replies = []
        for cid, command in commands:
            code = refuse(command) if refuse is not None else 0
            if code == 0 and apply:
                code = self._apply(command)
                self.applied.append(adms.command_summary(command))
            replies.append(f"ID={cid}&Return={code}&CMD=DATA")
        if replies and ack:
            a = self.http.post("/iclock/devicecmd", params={"SN": self.serial_no},
                               content="\n".join(replies) + "\n")
            assert a.text == "OK", a.text
        return len(commands)

    def enrol(self, pin: str, bio_type: int, data: bytes, *, no: int = 0, idx: int = 0,
              major_ver: int = 10) -> httpx.Response:
        """A person enrols a finger, a face or a comparison photo (bio_type 0) at the terminal:
        it keeps the template and pushes it up, in its dialect."""
        self.templates[(pin, bio_type, no, idx)] = data
        tmp = base64.b64encode(data).decode()
        if bio_type == 0:  # a comparison photo (the device took it for a visible-light face)
            line = (f"BIOPHOTO PIN={pin}\tFileName={pin}.jpg\tType=9\tSize={len(tmp)}\t"
                    f"Content={tmp}\n")
            table = "BIOPHOTO"
        elif self.biodata:
            line = (f"BIODATA Pin={pin}\tNo={no}\tIndex={idx}\tValid=1\tDuress=0\t"
                    f"Type={bio_type}\tMajorVer={major_ver}\tMinorVer=0\tFormat=0\tTmp={tmp}\n")
            table = "BIODATA"
        else:
            head, fid = ("FP", no) if bio_type == 1 else ("FACE", idx)
            line = (f"USER PIN={pin}\tName=\tPri=0\n"
                    f"{head} PIN={pin}\tFID={fid}\tSize={len(tmp)}\tValid=1\tTMP={tmp}\n")
            table = "OPERLOG"
        return self.http.post("/iclock/cdata", params={"SN": self.serial_no, "table": table,
                                                       "Stamp": "1"}, content=line)

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

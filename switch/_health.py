"""The operator's HTTP port: /metrics (Prometheus), /healthz and /readyz.

A small threaded HTTP server beside the event loop, as prometheus_client's own is. It reads
the runtime's state, never changes it:

- `/healthz` — 200 while the process runs (liveness);
- `/readyz` — 200 only while the switch listens for terminals after recovery; 503 while it
  starts, recovers after a failed commit, or drains (readiness: route terminals elsewhere);
- `/metrics` — the Prometheus exposition.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Readiness(Protocol):
    def readiness(self) -> dict[str, object]: ...


def start_health_server(host: str, port: int, runtime: Readiness) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b'{"status": "alive"}\n', "application/json")
            elif path == "/readyz":
                state = runtime.readiness()
                code = 200 if state.get("ready") else 503
                self._send(code, json.dumps(state).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds are not events

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server

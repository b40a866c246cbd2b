"""A real HTTP webhook receiver for the alert tests: records every POST, answers as told.

`Receiver().start()` listens on 127.0.0.1 in a thread of its own. Steer it with `fail_first`
(answer 500 to that many requests first), `status` (the answer after that) and `delay`
(seconds to wait before answering: a slow receiver).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    fail_first: int = 0
    status: int = 200
    delay: float = 0.0
    received: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with lock:
                    owner.attempts += 1
                    failing = owner.attempts <= owner.fail_first
                if owner.delay:
                    time.sleep(owner.delay)
                status = 500 if failing else owner.status
                if not failing and 200 <= status < 300:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    with lock:
                        owner.received.append(Delivery(self.path, headers, body, time.monotonic()))
                answer = b"ok" if status < 300 else b"failing on purpose"
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def on(self, path: str) -> list[Delivery]:
        """What was delivered (2xx) to `path`."""
        return [d for d in self.received if d.path == path]

"""A local HTTP endpoint that records webhook bodies (the notification tests and the browser test use it)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A local webhook endpoint: records every JSON body per path; `fail` makes a path answer 500 that many times."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict]] = {}
        self.fail: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if receiver.fail.get(self.path, 0) > 0:
                    receiver.fail[self.path] -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

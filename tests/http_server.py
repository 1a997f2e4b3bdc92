"""A real HTTP server on 127.0.0.1 for download tests, with the failure modes of real hosts.

Each path is a `Route` saying how to misbehave: ignore Range, drop the connection halfway, answer
5xx a few times first, answer a fixed status (404, 401...), serve HTML, redirect, or hold the body
until the test releases it. Every request is recorded with its headers so tests can count
downloads and check which host saw a token.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200  # a fixed answer (404, 401, 403...) instead of the body
    content_type: str = "application/octet-stream"
    ranges: bool = True  # honour Range with 206; False answers 200 with the whole body
    drop_after: int | None = None  # close the connection after this many body bytes...
    drops: int = 1  # ...on this many GET requests
    fail_first: list[int] = field(default_factory=list)  # statuses answered before the body, one per GET
    redirect: str | None = None  # answer 302 to this URL
    hold: threading.Event | None = None  # send the body only once the test sets it
    content_length: int | None = None  # announce this instead of the true length


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Clients that hang up mid-body on purpose (a rejected download) are not errors here."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class TestServer:
    """ThreadingHTTPServer in a daemon thread; `url(path)` under `host` (127.0.0.1 or localhost)."""

    __test__ = False  # not a pytest test class

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                server._handle(self, head=True)

            def do_GET(self):
                server._handle(self, head=False)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> TestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for route in self.routes.values():
            if route.hold is not None:
                route.hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def requests_for(self, path: str, method: str = "GET") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path and s.method == method]

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.seen.append(Seen(h.command, path, dict(h.headers.items())))
            route = self.routes.get(path)
            gets = sum(1 for s in self.seen if s.path == path and s.method == "GET")
        if route is None:
            return self._reply(h, 404, b"<!DOCTYPE html><html>not found</html>", "text/html", head)
        if route.redirect:
            h.send_response(302)
            h.send_header("Location", route.redirect)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if not head and gets <= len(route.fail_first):
            return self._reply(h, route.fail_first[gets - 1], b"server error", "text/plain", head)
        if route.status != 200:
            return self._reply(h, route.status, b'{"error": "nope"}', "application/json", head)

        body, start = route.body, 0
        match = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))
        if match and route.ranges:
            start = int(match.group(1))
            if start >= len(body):
                return self._reply(h, 416, b"", "text/plain", head)
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        part = body[start:]
        h.send_header("Content-Type", route.content_type)
        h.send_header("Content-Length", str(route.content_length if route.content_length is not None else len(part)))
        h.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        h.end_headers()
        if head:
            return None
        if route.hold is not None:
            route.hold.wait(60)
        drop = route.drop_after is not None and gets - len(route.fail_first) <= route.drops
        if drop:
            h.wfile.write(part[: route.drop_after])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        try:
            h.wfile.write(part)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on purpose
            pass
        return None

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, head: bool) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

"""A loopback HTTP server with misbehaving routes, for download tests.

Runs on 127.0.0.1 in daemon threads; every response ends within a few
seconds. ``paths`` records every request path received, so tests can assert
that refused URLs were never requested.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Text a hostile server puts in bodies, headers, reason phrases and redirect targets.
MARKER = b"zqxjmarker"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.record(self.path)
        route = parts.path.strip("/").split("/")
        handler = getattr(self, f"_route_{route[0].replace('-', '_')}", None)
        if handler is None:
            return self._send(404, b"not found", "text/plain")
        handler(route[1:], query)

    def _send(
        self,
        code: int,
        body: bytes,
        ctype: str = "application/octet-stream",
        headers: dict | None = None,
        length: bool = True,
        reason: str | None = None,
    ) -> None:
        self.send_response(code, reason)
        self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, item)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if not length:
            self.close_connection = True

    def _route_file(self, route, query) -> None:
        name = "/".join(route)
        if name not in self.server.files:
            return self._send(404, b"no such file", "text/plain")
        body, ctype = self.server.files[name]
        headers = {"X-Robots-Tag": query["robots"]} if "robots" in query else None
        self._send(200, body, ctype, headers, length=query.get("length", "1") == "1")

    def _route_status(self, route, query) -> None:
        self._send(int(route[0]), b"status page", "text/html")

    def _route_sleep(self, route, query) -> None:
        with self.server.active(route[0]):
            time.sleep(float(route[0]))
        self._send(200, b"late", "text/plain")

    def _route_drip(self, route, query) -> None:
        """Headers at once, then one byte every 0.2 s for ``route[0]`` seconds."""
        seconds = float(route[0])
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100")
        self.end_headers()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass
        self.close_connection = True

    def _route_flaky(self, route, query) -> None:
        """``/flaky/<code>/<name>/<n>``: fails with ``code`` (Retry-After 1 on 429) ``n`` times, then serves."""
        code, name, times = int(route[0]), route[1], int(route[2])
        if self.server.count(f"flaky/{code}/{name}") <= times:
            headers = {"Retry-After": query.get("retry_after", "1")} if code in (429, 503) else None
            return self._send(code, b"busy", "text/plain", headers)
        self._route_file([name], {})

    def _route_redirect(self, route, query) -> None:
        """``/redirect/<hops>/<name>``: ``hops`` redirects, then the file. ``?to=URL``: one hop to URL.

        The target is sent as UTF-8 bytes, as servers do with non-ASCII locations.
        """
        if "to" in query:
            location = query["to"].encode("utf-8").decode("latin-1")  # send_header writes latin-1
            return self._send(302, b"", "text/plain", {"Location": location})
        hops, name = int(route[0]), route[1]
        target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/file/{name}"
        self._send(301, b"", "text/plain", {"Location": target})

    def _route_gzip(self, route, query) -> None:
        """``/gzip/<n>``: ``n`` zero bytes, gzip-encoded (a few hundred bytes on the wire)."""
        body = gzip.compress(b"\x00" * int(route[0]))
        self._send(200, body, "image/jpeg", {"Content-Encoding": "gzip"})

    def _route_hostile(self, route, query) -> None:
        """``/hostile/<kind>``: a response that carries ``MARKER`` wherever a server can put text."""
        kind, image = route[0], self.server.files.get("hostile.jpg", (b"", ""))[0]
        plain = {
            "body": (200, b"<html><title>" + MARKER * 10, "text/html", {}),
            "json": (200, b'{"error": "' + MARKER + b'"}', "application/json", {}),
            "png": (200, b"\x89PNG\r\n\x1a\n" + MARKER * 4, "image/png", {}),
            "headers": (
                200,
                image,
                MARKER.decode(),
                {"X-Robots-Tag": MARKER.decode(), "X-Note": MARKER.decode(), "Server": MARKER.decode()},
            ),
            "retry": (503, MARKER, "text/plain", {"Retry-After": MARKER.decode()}),
            "private": (302, MARKER, "text/plain", {"Location": f"http://10.0.0.1/{MARKER.decode()}"}),
            "dns": (302, b"", "text/plain", {"Location": f"http://{MARKER.decode()}.invalid/x.jpg"}),
            "malformed": (302, b"", "text/plain", {"Location": f"http://{MARKER.decode()} x/"}),
            "scheme": (302, b"", "text/plain", {"Location": f"{MARKER.decode()}://x/"}),
            "loop": (302, b"", "text/plain", {"Location": f"/hostile/loop?{MARKER.decode()}"}),
        }
        if kind in plain:
            code, body, ctype, headers = plain[kind]
            return self._send(code, body, ctype, headers, reason=MARKER.decode())
        raw = {  # responses no well-behaved server library would write
            "status_line": b"HTTP/1.1 2" + MARKER + b"\r\nContent-Length: 0\r\n\r\n",
            "header_line": b"HTTP/1.1 200 OK\r\n" + MARKER + b"\x01: x\r\nContent-Length: 0\r\n\r\n",
            "chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + MARKER + b"\r\n",
            "encoding": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\n" + MARKER,
        }
        self.wfile.write(raw[kind])
        self.close_connection = True

    def _route_loop(self, route, query) -> None:
        other = "b" if route[0] == "a" else "a"
        self._send(302, b"", "text/plain", {"Location": f"/loop/{other}"})


class Listener:
    """A listening TCP socket on ``host`` that never answers; counts the connections made to it.

    Bind it to a loopback address the policy refuses (127.0.0.2, ::1) to prove
    that no spelling of that address is ever connected to. The kernel completes
    every handshake into the backlog, so ``connections()`` counts them all.
    """

    def __init__(self, host: str):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._accepted = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return self._accepted
            self._accepted += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections under concurrent clients

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.paths: list[str] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def add(self, name: str, body: bytes, ctype: str = "image/jpeg") -> str:
        self.files[name] = (body, ctype)
        return self.url(f"file/{name}")

    def record(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)

    def count(self, name: str) -> int:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
            return self._counts[name]

    @contextlib.contextmanager
    def active(self, name: str):
        """Counts concurrent requests of one kind inside the block (``max_in_flight[name]``)."""
        with self._lock:
            self.in_flight[name] = self.in_flight.get(name, 0) + 1
            self.max_in_flight[name] = max(self.max_in_flight.get(name, 0), self.in_flight[name])
        try:
            yield
        finally:
            with self._lock:
                self.in_flight[name] -= 1

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def handle_error(self, request, client_address) -> None:
        """Clients that time out close their end: expected here, not worth a traceback."""

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

"""A loopback HTTP server for a folder: the demo's stand-in for the web."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 -- the base class's name
        pass


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops connections under a concurrent downloader.
    request_queue_size = 128
    daemon_threads = True


class LoopbackServer:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port by default) in a thread."""

    def __init__(self, root: Path, port: int = 0):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = _Server(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{str(host)}:{port}"  # an IPv4 address: a str

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

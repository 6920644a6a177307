"""The master's HTTP side (``jax-pccl master --http-port P``): ``/status.json``
(``Master.status()``), ``/metrics`` (Prometheus text, jax_pccl/metrics.py) and
``/`` (the live page, jax_pccl/dashboard.py). Read-only, off by default, bound
to 127.0.0.1 unless told otherwise: the report names every peer's address.
Served on threads of the master's process; ``close()`` stops and joins them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .dashboard import PAGE
from .metrics import prometheus_text


class StatusHTTPServer:
    """Serves one Master's status until close()."""

    def __init__(self, master, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"master": master})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="jax-pccl-http",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    master = None  # set per server (a subclass per StatusHTTPServer)
    server_version = "jax-pccl"

    def do_GET(self):  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path == "/status.json":
            self._reply(200, "application/json", json.dumps(self.master.status()))
        elif path == "/metrics":
            self._reply(200, "text/plain; version=0.0.4; charset=utf-8",
                        prometheus_text(self.master.status()))
        elif path in ("/", "/index.html"):
            self._reply(200, "text/html; charset=utf-8", PAGE)
        else:
            self._reply(404, "text/plain; charset=utf-8", f"no such page: {path}\n")

    def _reply(self, code: int, content_type: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - the http.server API
        pass  # the master's log is for membership, not for page views

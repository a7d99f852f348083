"""A forwarding HTTP proxy in front of a local S3 (moto) that injects faults on demand.

Point `AWS_ENDPOINT_URL_S3` at `proxy.url`, then `proxy.inject("503", "drop", method="GET")`
queues faults for the next matching requests:

- `"500"`, `"503"`: an S3 error response (InternalError / SlowDown) with that status;
- `"drop"`: the connection is closed without any response (a dropped connection);
- `"truncate"`: the real response's headers and half of its body, then the connection closes
  (a GET whose body breaks off midway);
- `"403"`: an AccessDenied error (permanent: must not be retried).

Every request is recorded in `proxy.seen` as (method, path, outcome).
"""
from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERRORS = {"500": ("InternalError", "We encountered an internal error. Please try again."),
          "503": ("SlowDown", "Please reduce your request rate."),
          "403": ("AccessDenied", "Access Denied")}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class _Fault:
    kind: str
    method: str | None
    path: str


@dataclass
class FaultProxy:
    upstream: str
    faults: list[_Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, *kinds: str, method: str | None = None, path: str = "") -> None:
        """Queue faults for the next requests with this method and a path containing `path`."""
        with self._lock:
            self.faults += [_Fault(k, method, path) for k in kinds]

    def pending(self) -> int:
        with self._lock:
            return len(self.faults)

    def outcomes(self, method: str | None = None) -> list[str]:
        return [o for m, _, o in self.seen if method in (None, m)]

    def _take(self, method: str, path: str) -> str | None:
        with self._lock:
            for i, f in enumerate(self.faults):
                if f.method in (None, method) and f.path in path:
                    return self.faults.pop(i).kind
        return None

    def start(self) -> FaultProxy:
        proxy = self
        target = urllib.parse.urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._take(self.command, self.path)
                proxy.seen.append((self.command, self.path, fault or "ok"))
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in ERRORS:
                    code, message = ERRORS[fault]
                    xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                           f"<Message>{message}</Message></Error>").encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if fault == "truncate":
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

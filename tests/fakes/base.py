"""A base for the local HTTP servers that stand in for remote APIs in the tests.

Each fake implements one remote's documented contract (../shared/reference) as routes, records
every request, and misbehaves on demand: a scripted status (a 429 storm, a 503), a cut connection
(before or after the request had its effect), a delay, or "answer N after doing the work" (a 504
after a success). Servers run in a thread on 127.0.0.1 with an OS-chosen port, optionally over TLS.

    api = FakeAPI()
    @api.route("GET", r"/v1/items/(?P<id>[^/]+)")
    def item(req, id):
        return Response.json({"id": id})
    api.start()
    api.fault(Fault(status=429, headers={"Retry-After": "1"}, times=3))
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client: tuple[str, int]
    at: float = field(default_factory=time.monotonic)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())

    @classmethod
    def text(cls, text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}, text.encode())


@dataclass
class Fault:
    """A scripted misbehaviour for the next `times` requests that `match` (None: every request).

    kind "status": answer `status` (with `headers`, `body`) without running the route.
    kind "after": run the route (its effect happens), then answer `status` instead (a 504 after success).
    kind "cut": close the connection without an answer, before the route runs.
    kind "cut-after": run the route, then close the connection without an answer.
    `delay` seconds are slept first in every kind."""

    kind: str = "status"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    times: int = 1
    match: Callable[[Request], bool] | str | None = None  # a callable, or a regex searched in "METHOD path"

    def matches(self, req: Request) -> bool:
        if self.match is None:
            return True
        if callable(self.match):
            return bool(self.match(req))
        return re.search(self.match, f"{req.method} {req.path}") is not None


Handler = Callable[..., Response]


class FakeAPI:
    """A threaded HTTP server with routes, a request log and faults on demand (see the module docstring)."""

    def __init__(self, tls: ssl.SSLContext | None = None, name: str = "fake API"):
        self.name = name
        self.tls = tls
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()  # routes that change state take it; so do the log and the faults
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------
    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def add(fn: Handler) -> Handler:
            self.routes.append((method.upper(), re.compile(f"^{pattern}$"), fn))
            return fn

        return add

    def fault(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeAPI:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _serve(self) -> None:
                api._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=f"{self.name} server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAPI:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened --------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Requests received, optionally only those of `method` whose path matches the regex `path`."""
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method) and (path is None or re.search(path, r.path))]

    # -- serving ---------------------------------------------------------------
    def _take_fault(self, req: Request) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times > 0 and f.matches(req):
                    f.times -= 1
                    if f.times == 0:
                        self.faults.remove(f)
                    return f
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(h.rfile)
        else:
            body = h.rfile.read(length) if length else b""
        req = Request(h.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                      {k.lower(): v for k, v in h.headers.items()}, body, h.client_address)
        with self.lock:
            self.requests.append(req)
        fault = self._take_fault(req)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.kind == "cut":
            _cut(h)
            return
        if fault is not None and fault.kind == "status":
            self._send(h, Response(fault.status, fault.headers, fault.body))
            return
        response = self._dispatch(req)
        if fault is not None and fault.kind == "cut-after":
            _cut(h)
            return
        if fault is not None and fault.kind == "after":
            response = Response(fault.status, fault.headers, fault.body)
        self._send(h, response)

    def _dispatch(self, req: Request) -> Response:
        allowed = False
        for method, pattern, fn in self.routes:
            m = pattern.match(req.path)
            if m is None:
                continue
            allowed = True
            if method == req.method:
                try:
                    return fn(req, **m.groupdict())
                except Exception as exc:  # noqa: BLE001 - a bug in a fake is a 500 the test will see
                    return Response.text(f"{self.name}: {type(exc).__name__}: {exc}", 500)
        return Response.text("method not allowed", 405) if allowed else Response.text(f"no route for {req.path}", 404)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            h.send_response(response.status)
            headers = {"Content-Length": str(len(response.body)), **response.headers}
            for name, value in headers.items():
                h.send_header(name, value)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _cut(h: BaseHTTPRequestHandler) -> None:
    """Close the connection without a byte of answer (RST where the OS allows)."""
    h.close_connection = True
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_chunked(rfile) -> bytes:
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            rfile.readline()
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, content) of each part of a multipart/form-data body (RFC 7578), byte exact."""
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip('"').encode()
    delim = b"--" + boundary
    assert body.startswith(delim + b"\r\n"), "multipart body does not start with its boundary"
    sections = body[len(delim) + 2 :].split(b"\r\n" + delim)
    assert sections[-1] in (b"--\r\n", b"--"), "multipart body has no closing boundary"
    parts = []
    for n, section in enumerate(sections[:-1]):
        if n:
            assert section.startswith(b"\r\n")
            section = section[2:]
        head, _, content = section.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def self_signed_cert(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for `host` (as IP SAN): (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path

"""What the cloud-folder fakes (dropbox_api, graph_api, drive_api) share: one TLS certificate for
127.0.0.1 per process (the providers' SDKs speak only https), file contents kept on disk (so a
benchmark of 20 MB files does not grow the test process), and the body of a request checked
against its Content-Length (a cut-off upload creates nothing, as at the real services)."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import tempfile
import threading
import uuid
from pathlib import Path

from tests.fakes.base import self_signed_cert

_TLS: tuple[ssl.SSLContext, str] | None = None
_TLS_LOCK = threading.Lock()


def tls() -> tuple[ssl.SSLContext, str]:
    """(server context, CA bundle path) for https://127.0.0.1, made once per process.

    REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are dropped from this process's environment (and so from
    the sync processes the tests start): requests lets them override a session-level `verify`
    (requests #3829), which is how tasks/oauth.py's token session sets a block's ca_bundle, so the
    fakes' CA would be ignored at their token endpoints. Per-request `verify` (tasks/http.py) is
    not affected either way."""
    global _TLS
    with _TLS_LOCK:
        if _TLS is None:
            import os

            for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
                os.environ.pop(name, None)
            folder = Path(tempfile.mkdtemp(prefix="docroute-fake-tls-"))
            cert, key = self_signed_cert(folder)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            _TLS = (ctx, str(cert))
        return _TLS


class Blobs:
    """File contents on disk, by an opaque id."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="docroute-fake-blobs-"))

    def put(self, data: bytes) -> str:
        blob = uuid.uuid4().hex
        (self.root / blob).write_bytes(data)
        return blob

    def append(self, blob: str | None, data: bytes) -> str:
        blob = blob or uuid.uuid4().hex
        with (self.root / blob).open("ab") as fh:
            fh.write(data)
        return blob

    def get(self, blob: str) -> bytes:
        return (self.root / blob).read_bytes()

    def size(self, blob: str) -> int:
        return (self.root / blob).stat().st_size

    def sha256(self, blob: str) -> str:
        h = hashlib.sha256()
        with (self.root / blob).open("rb") as fh:
            while data := fh.read(1 << 20):
                h.update(data)
        return h.hexdigest()

    def drop(self, blob: str) -> None:
        (self.root / blob).unlink(missing_ok=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def complete(req) -> bool:
    """The request carried the whole body its Content-Length announced."""
    declared = req.headers.get("content-length")
    return declared is None or int(declared) == len(req.body)


def bearer(req) -> str:
    header = req.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else ""


_SHARED: dict[str, object] = {}


def shared(name: str, make):
    """One fake server of a kind per test process, started on first use and stopped at exit (the
    conformance suites' conftests only collect *_harness fixtures, so a session fixture of a fake
    would not reach them)."""
    import atexit

    with _TLS_LOCK:
        fake = _SHARED.get(name)
    if fake is None:
        fake = make().start()
        with _TLS_LOCK:
            _SHARED[name] = fake

        def stop(f=fake):
            f.stop()
            blobs = getattr(f, "blobs", None)
            if blobs is not None:
                blobs.cleanup()

        atexit.register(stop)
    return fake


class QuietStart:
    """Mixin for a FakeAPI: a client that aborts its request mid-body (a test of a broken source) is not
    a traceback on stderr."""

    def start(self):
        super().start()
        self._httpd.handle_error = lambda request, address: None
        return self

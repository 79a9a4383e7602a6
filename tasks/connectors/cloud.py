"""What the cloud-folder connectors (Dropbox, OneDrive/SharePoint, Google Drive) share.

- Folder layout as on SFTP: the connection's folder (or its test folder), then the package's
  folder, then each file under its mapped name, in package order (document first, the sidecar or
  trigger file last). `remote_path` checks the names once more (mapping sanitised them already).
- Never a partial file under a final name: a cloud upload becomes a file only once its last byte
  is in, so the last bytes are held back until the whole source was read and matched its size and
  SHA-256 (`HeldBackBody` for a one-request upload, `ChunkSource` for upload sessions). A source
  that breaks or changed since it was hashed ends the request before its last byte: nothing is
  created. Memory stays flat: one chunk at a time.
- The providers' content hashes, computed while streaming: Dropbox's content_hash (SHA-256 of the
  SHA-256s of 4 MiB blocks) and Microsoft's QuickXorHash (OneDrive for Business and SharePoint).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
from datetime import datetime, timezone
from typing import BinaryIO

import numpy as np

from tasks.connectors.base import (
    CheckResult,
    Connector,
    Delivery,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteError,
    TransientDeliveryError,
)
from tasks.errors import TransientError

READ = 256 * 1024  # bytes read from a source at a time


# -- provider hashes -----------------------------------------------------------------------------------
class DropboxContentHasher:
    """Dropbox's content_hash: SHA-256 over the concatenated SHA-256 digests of each 4 MiB block
    (https://www.dropbox.com/developers/reference/content-hash), hex."""

    BLOCK = 4 * 1024 * 1024

    def __init__(self) -> None:
        self._overall = hashlib.sha256()
        self._block = hashlib.sha256()
        self._pos = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(self.BLOCK - self._pos, len(view))
            self._block.update(view[:take])
            self._pos += take
            view = view[take:]
            if self._pos == self.BLOCK:
                self._overall.update(self._block.digest())
                self._block, self._pos = hashlib.sha256(), 0

    def hexdigest(self) -> str:
        overall = self._overall.copy()
        if self._pos:
            overall.update(self._block.digest())
        return overall.hexdigest()


class QuickXorHash:
    """Microsoft's QuickXorHash (OneDrive for Business, SharePoint: `file.hashes.quickXorHash`), base64.

    Each byte at offset i is XORed into a 160-bit register, rotated left by (11 * i) mod 160 bits;
    the file length (64-bit little-endian) is XORed into the register's last 8 bytes; the register
    is emitted little-endian (the published C# reference's cell layout, 64 + 64 + 32 bits)."""

    WIDTH = 160
    SHIFT = 11

    def __init__(self) -> None:
        self._cols = np.zeros(self.WIDTH, dtype=np.uint8)  # XOR of the bytes at offsets = k mod 160
        self._length = 0

    def update(self, data: bytes) -> None:
        if not data:
            return
        arr = np.frombuffer(data, dtype=np.uint8)
        start = self._length % self.WIDTH
        head = min(len(arr), (self.WIDTH - start) % self.WIDTH)
        if head:
            self._cols[start : start + head] ^= arr[:head]
        rest = arr[head:]
        full = len(rest) // self.WIDTH * self.WIDTH
        if full:
            self._cols ^= np.bitwise_xor.reduce(rest[:full].reshape(-1, self.WIDTH), axis=0)
        tail = rest[full:]
        if len(tail):
            self._cols[: len(tail)] ^= tail
        self._length += len(arr)

    def digest(self) -> bytes:
        mask = (1 << self.WIDTH) - 1
        register = 0
        for k, byte in enumerate(self._cols.tolist()):
            if byte:
                shift = (k * self.SHIFT) % self.WIDTH
                register ^= ((byte << shift) | (byte >> (self.WIDTH - shift))) & mask
        out = bytearray(register.to_bytes(self.WIDTH // 8, "little"))
        for i, b in enumerate(self._length.to_bytes(8, "little")):
            out[self.WIDTH // 8 - 8 + i] ^= b
        return bytes(out)

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode()


def hash_file(f: PackageFile, *hashers) -> None:
    """Feed a package file's bytes (a fresh stream) to the hashers."""
    with f.open() as fh:
        while data := fh.read(READ):
            for h in hashers:
                h.update(data)


# -- paths ---------------------------------------------------------------------------------------------
def clean_root(folder: str) -> str:
    """A connection's folder as '/a/b' ('' for the root)."""
    parts = [p for p in folder.replace("\\", "/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise ValueError("folder must not contain '..'")
    return "/" + "/".join(parts) if parts else ""


def package_folder(root: str, package: Package, day_folder: bool = False) -> str:
    """The package's folder under `root` ('/a/b'), checked: no '..', no empty segment."""
    rel = posixpath.normpath(package.folder) if package.folder else ""
    if rel in (".", ""):
        rel = ""
    if rel.startswith(("/", "..")) or "/../" in f"/{rel}/":
        raise PermanentDeliveryError(f"document {package.doc_id}: folder {package.folder!r} escapes the connection's folder")
    if day_folder:
        rel = posixpath.join(rel, datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    for f in package.files:
        if "/" in f.name or "\\" in f.name or f.name in ("", ".", ".."):
            raise PermanentDeliveryError(f"document {package.doc_id}: bad file name {f.name!r}")
    return f"{root}/{rel}".rstrip("/") if rel else root


def relative(root: str, path: str) -> str:
    """`path` relative to `root` (both '/a/b'), compared case-insensitively where the provider does."""
    if not root:
        return path.lstrip("/")
    return path[len(root):].lstrip("/") if path.lower().startswith(root.lower() + "/") else path.lstrip("/")


# -- streaming with the last bytes held back -----------------------------------------------------------
class _Verifier:
    """Counts and hashes a source as it is read; `check()` raises when it is not what was hashed."""

    def __init__(self, package: Package, f: PackageFile, *extra):
        self.package, self.f = package, f
        self.sha = hashlib.sha256()
        self.extra = extra
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.sha.update(data)
        for h in self.extra:
            h.update(data)
        self.size += len(data)
        if self.size > self.f.size:
            self.fail()

    def fail(self):
        f = self.f
        raise TransientDeliveryError(
            f"document {self.package.doc_id}: source file {f.name} changed while being sent (expected {f.size} bytes "
            f"sha256 {f.sha256[:12]}, read {self.size} bytes sha256 {self.sha.hexdigest()[:12]})"
        )

    def check(self) -> None:
        if self.size != self.f.size or self.sha.hexdigest() != self.f.sha256:
            self.fail()


def source_error(package: Package, f: PackageFile, exc: OSError) -> TransientDeliveryError:
    return TransientDeliveryError(f"document {package.doc_id}: cannot read source file {f.name}: {exc.strerror or exc}")


class SourceFailed(Exception):
    """Raised through the HTTP library from a request body's read(): the source broke or changed. Not a
    network error (the HTTP layer must not send the request again): the connector raises `.error`."""

    def __init__(self, error: TransientDeliveryError):
        super().__init__(str(error))
        self.error = error


class HeldBackBody:
    """A request body (file-like, with a length) that streams a package file and hands out its last
    bytes only once the whole source was read and matched its size and SHA-256. A source that breaks
    or differs raises TransientDeliveryError from read(): the request ends before its last byte, so
    the remote never completes the file. `hashers` (fresh instances of `hasher_classes`) see every
    byte (a provider's content hash). seek(0) starts again (the HTTP layer repeats a request after
    a refused token)."""

    def __init__(self, package: Package, f: PackageFile, *hasher_classes):
        self.package, self.f = package, f
        self.hasher_classes = hasher_classes
        self._stream: BinaryIO | None = None
        self._start()

    def _start(self) -> None:
        self.close()
        self.hashers = [cls() for cls in self.hasher_classes]
        self.verifier = _Verifier(self.package, self.f, *self.hashers)
        self._buf = b""
        self._eof = False
        self._given = 0

    def __len__(self) -> int:
        return self.f.size

    def tell(self) -> int:
        return self._given

    def seek(self, pos: int, whence: int = 0) -> int:
        if (pos, whence) != (0, 0):
            raise OSError("a held-back body can only start again from 0")
        self._start()
        return 0

    def read(self, n: int = -1) -> bytes:
        if self._stream is None and not self._eof:
            try:
                self._stream = self.f.open()
            except OSError as exc:
                raise SourceFailed(source_error(self.package, self.f, exc)) from None
        if n is None or n < 0:
            n = self.f.size + 1
        while not self._eof and len(self._buf) <= n:
            try:
                data = self._stream.read(max(READ, n))
            except OSError as exc:
                raise SourceFailed(source_error(self.package, self.f, exc)) from None
            try:
                if not data:
                    self._eof = True
                    self.verifier.check()
                else:
                    self.verifier.feed(data)
                    self._buf += data
            except TransientDeliveryError as exc:
                raise SourceFailed(exc) from None
        out, self._buf = self._buf[:n], self._buf[n:]
        self._given += len(out)
        return out

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    @property
    def complete(self) -> bool:
        """The whole source was read and verified (the hashers saw every byte)."""
        return self._eof and not self._buf


class ChunkSource:
    """A package file read in chunks for an upload session: `chunk(offset, n)` gives bytes
    [offset, offset + n), reading forward (one chunk in memory), reopening the source when a
    resumed session asks for bytes before the ones held. The chunk that ends the file is given out
    only once the whole file was read and verified (`_Verifier`)."""

    def __init__(self, package: Package, f: PackageFile, *hasher_classes):
        self.package, self.f = package, f
        self.hasher_classes = hasher_classes
        self.hashers: list = []  # fresh instances of hasher_classes, fed from offset 0 (each reopen starts again)
        self._stream: BinaryIO | None = None
        self._pos = 0  # bytes read from the stream
        self._held = (0, b"")  # (offset, bytes) of the chunk last given out
        self.verifier: _Verifier | None = None

    @property
    def size(self) -> int:
        return self.f.size

    def _open(self) -> None:
        self.close()
        try:
            self._stream = self.f.open()
        except OSError as exc:
            raise source_error(self.package, self.f, exc) from None
        self._pos = 0
        self.hashers = [cls() for cls in self.hasher_classes]
        self.verifier = _Verifier(self.package, self.f, *self.hashers)

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                data = self._stream.read(min(READ, n - len(out)))
            except OSError as exc:
                raise source_error(self.package, self.f, exc) from None
            if not data:
                break
            self.verifier.feed(data)
            out += data
        self._pos += len(out)
        return bytes(out)

    def chunk(self, offset: int, n: int) -> bytes:
        """Bytes [offset, offset + n); SourceFailed when the source breaks or is not what was hashed."""
        try:
            return self._chunk(offset, n)
        except TransientDeliveryError as exc:
            raise SourceFailed(exc) from None

    def _chunk(self, offset: int, n: int) -> bytes:
        start, held = self._held
        if start <= offset and offset + n <= start + len(held):
            return held[offset - start : offset - start + n]
        if self._stream is None or offset < self._pos:
            self._open()
        while self._pos < offset:  # skip forward (a resumed session past what we hold)
            if not self._read(min(READ, offset - self._pos)):
                break
        data = self._read(n)
        if self._pos >= self.f.size:
            extra = self._read(1)  # the source must end here
            if extra:
                self.verifier.fail()
            self.verifier.check()
        self._held = (offset, data)
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


# -- the connector base ----------------------------------------------------------------------------------
class CloudConnector(Connector):
    """A cloud folder: the connection's `folder` (or `test_folder`), the package's folder below it, each
    file put by `put()` in package order (the trigger file last: a failure stops the package there).
    `transfers` documents go at once (Ability.PARALLEL): the HTTP clients and token managers are
    thread-safe. Subclasses implement `put`, `check`, and the optional abilities."""

    scheme = "cloud"

    @property
    def parallelism(self) -> int:
        return self.connection.transfers

    @property
    def root(self) -> str:
        folder = self.test_setting("test_folder") if self.mode == Mode.TEST else self.connection.folder
        try:
            return clean_root(folder or "")
        except ValueError as exc:
            raise PermanentDeliveryError(f"{self.label}: {exc}") from None

    def folder_of(self, package: Package) -> str:
        return package_folder(self.root, package, getattr(self.connection, "day_folder", False))

    def put(self, package: Package, folder: str, f: PackageFile) -> tuple[str, bool]:
        """Upload one file into `folder` ('/a/b'); (remote ref, True when an identical file was already there)."""
        raise NotImplementedError

    def deliver(self, package: Package) -> Delivery:
        folder = self.folder_of(package)
        refs, present = [], True
        for f in package.files:  # document first, sidecar (the trigger) last
            try:
                ref, was = self.put(package, folder, f)
            except SourceFailed as exc:
                raise exc.error from None
            except RemoteError as exc:
                text = str(exc)
                if package.doc_id not in text and type(exc).__init__ is RemoteError.__init__:
                    raise type(exc)(f"document {package.doc_id}: {f.name}: {text}", retry_after=exc.retry_after,
                                    status=exc.status) from None
                raise
            refs.append(ref)
            present = present and was
        return Delivery(remote_ref=refs[0], already_present=present)

    def check_result(self, ok: bool, message: str) -> CheckResult:
        return CheckResult(ok, self.scrub(message))


def send(http, method: str, url: str, *, accept: tuple[int, ...] = (), retries: int = 4, what: str = "", **kwargs):
    """One request through tasks.http.HttpClient, repeated after network errors, 408/425/429 and 5xx
    (Retry-After holds every thread of the client, else an exponential backoff with jitter), for
    requests the caller knows are safe to repeat. Returns the answer when it is 2xx or in `accept`
    (a 409 the caller reads); raises the classified error otherwise. A body that can seek is sent
    again from its start."""
    import random
    import time


    body = kwargs.get("data")
    for attempt in range(retries + 1):
        if attempt and callable(getattr(body, "seek", None)):
            body.seek(0)
        try:
            response = http.request(method, url, what=what, idempotent=False, check=False, **kwargs)
        except TransientError:
            if attempt == retries:
                raise
            time.sleep(min(10.0, 0.25 * 2 ** attempt) * (0.5 + random.random()))
            continue
        if 200 <= response.status_code < 300 or response.status_code in accept:
            return response
        error = http.status_error(response, what)
        response.close()
        if not isinstance(error, TransientError) or attempt == retries:
            raise error
        if error.retry_after is not None:
            http.pacer.pause(error.retry_after)
        else:
            time.sleep(min(10.0, 0.25 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")

"""Webhook connector: one signed POST per document (Standard Webhooks), over one requests.Session.

Body (`WebhookConnection.payload`):
- json: ``{"type": "document.exported", "mode": "production", "document": {id, version, client,
  integration, document_type, fields, files: [{name, role, media_type, size, sha256, content_base64}]}}``.
  ``mode`` is the integration's send mode (production, test or certification), inside the
  signature; the same value is in the ``docroute-mode`` header. Test mode posts to the
  connection's test_url, certification mode to certification_url (default: url).
- multipart/form-data: a ``metadata`` part (the same JSON, without content_base64) and one
  ``file`` part per file, in delivery order, each with its filename and media type.
- auto (default): json when all files together fit in ``inline_max_bytes``, else multipart.

How a body is built: the signature covers the exact bytes sent, and must be in the headers
before the first body byte. So the body is first written to a spooled temporary file (in
memory up to 1 MiB, then on disk): files are read through VerifyingReader in 1 MiB chunks
(base64-encoded on the way for json) and verified before anything is sent; then the
spool is hashed once per signing secret and streamed to the socket. A 50 MB PDF is never
held in memory at all, let alone twice; the price is one temporary copy on disk. Reading
the source twice instead (once to sign, once to send) would let it change in between.

Signing: ``webhook-id`` = package.idempotency_key (the same on every retry: the receiver's
dedup key), ``webhook-timestamp`` = this attempt's time, ``webhook-signature`` = one
``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}." + body)>`` per secret, space separated.
Note for receivers: the reference Python library (standardwebhooks 1.1) decodes the body
as UTF-8 before verifying, so it cannot verify binary multipart bodies; such receivers
should verify over the raw bytes or use payload=json.

Answers: 2xx = delivered (remote_ref = Location header, else an "id" in a JSON answer, else
the webhook-id); 410 = endpoint gone (permanent); 408, 429, 5xx, connection errors and
timeouts = transient, with Retry-After honoured; redirects are not followed (a 3xx is
permanent: configure the final URL); other 4xx permanent. Messages name the document and
the endpoint, carry the status and at most 300 characters of the answer, scrubbed of secrets.

check(): a signed POST of ``{"type": "docroute.check"}`` (a fresh webhook-id each time), the
same request path a document takes, so TLS, authentication and signature are all exercised.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import ssl
import tempfile
import time
import uuid
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO

import requests

from blocks.webhook import SECRET_PREFIX
from tasks.connectors.base import (
    Ability,
    CheckResult,
    Connector,
    Delivery,
    DeliveryError,
    Mode,
    Package,
    PackageFile,
    CredentialsRefusedError,
    PermanentDeliveryError,
    TransientDeliveryError,
    VerifyingReader,
)

SPOOL_IN_MEMORY = 1024 * 1024
READ_SIZE = 3 * 256 * 1024  # a multiple of 3: base64 chunks concatenate without padding
ANSWER_CHARS = 300
USER_AGENT = "docroute-webhook/1"
TRANSIENT_STATUSES = {408, 425, 429}


class _Body:
    """A spooled body with a length, so requests sends Content-Length and streams it."""

    def __init__(self, spool: BinaryIO, size: int):
        self._spool = spool
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        return self._spool.read(n)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception (urllib3 wraps ssl/socket errors several levels deep)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            for arg in getattr(exc, "args", ()):
                if isinstance(arg, BaseException):
                    inner = arg
                    break
            else:
                reason = getattr(exc, "reason", None)
                inner = reason if isinstance(reason, BaseException) else None
        if inner is None:
            break
        exc = inner
    return exc


class WebhookConnector(Connector):
    """POSTs each package to the connection's URL (test_url in test mode, certification_url or url in
    certification mode), signed. The mode travels in the signed body and a docroute-mode header."""

    abilities = frozenset({Ability.CERTIFICATION})

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._session: requests.Session | None = None
        self._keys = [
            base64.b64decode(s.get_secret_value()[len(SECRET_PREFIX):]) for s in self.connection.signing_secrets
        ]
        self._secrets = sorted(self.connection.secret_values(), key=len, reverse=True)

    # -- lifecycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        if self.mode == Mode.TEST:
            return self.test_setting("test_url")
        if self.mode == Mode.CERTIFICATION and self.connection.certification_url:
            return self.connection.certification_url
        return self.connection.url

    @property
    def label(self) -> str:
        block = self.connection
        if self.mode == Mode.TEST and block.test_url:
            return block.label(block.test_url)
        return block.label(block.certification_url if self.mode == Mode.CERTIFICATION else None)

    def open(self) -> None:
        """Start the session and check the endpoint's TLS certificate: a certificate problem is the
        connection's, so the sync run stops before any document is touched (and none is parked for it)."""
        self._start_session()
        self._check_certificate()

    def _check_certificate(self) -> None:
        """A HEAD request to the endpoint over https; only certificate and ca_bundle problems raise
        (any HTTP answer, even 405, is fine; other network errors are left to the deliveries)."""
        try:
            url = self.url
        except DeliveryError:
            return  # no test_url: each document says so
        if not (self.connection.verify_tls and url.startswith("https:")):
            return
        timeout = self.connection.timeout
        try:
            self._session.head(url, timeout=(timeout, timeout), allow_redirects=False, verify=self._verify)
        except requests.RequestException as exc:
            if isinstance(_root_cause(exc), ssl.SSLCertVerificationError):
                raise self._request_error(None, exc) from None
        except OSError as exc:  # requests raises a bare OSError for a ca_bundle path that is not there
            raise PermanentDeliveryError(f"{self.label}: ca_bundle {self.connection.ca_bundle!r} cannot be used: {exc}") from None

    def _start_session(self) -> None:
        block = self.connection
        session = requests.Session()
        # Passed on every request too: a session-level verify loses to REQUESTS_CA_BUNDLE (requests #3829).
        self._verify = block.ca_bundle if (block.verify_tls and block.ca_bundle) else block.verify_tls
        session.verify = self._verify
        session.headers.update({"User-Agent": USER_AGENT, **block.headers})
        if block.auth == "bearer":
            session.headers["Authorization"] = f"Bearer {block.bearer_token.get_secret_value()}"
        elif block.auth == "basic":
            session.auth = (block.username, block.password.get_secret_value())
        self._session = session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- the interface ------------------------------------------------------
    def check(self) -> CheckResult:
        body = json.dumps({"type": "docroute.check", "mode": self.mode.value, "timestamp": int(time.time())}).encode()
        try:
            with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
                spool.write(body)
                response = self._post(spool, len(body), "application/json", f"chk_{uuid.uuid4().hex}")
                status, text = response.status_code, self._answer(response)
        except DeliveryError as exc:
            return CheckResult(False, f"{self.label}: check request failed: {exc}")
        if 200 <= status < 300:
            return CheckResult(True, f"{self.label}: answered {status} to a signed docroute.check request")
        hint = " (wrong signing secret or credentials?)" if status in (401, 403) else ""
        return CheckResult(False, f"{self.label}: answered {status} to a signed docroute.check request{hint}: {text}")

    def deliver(self, package: Package) -> Delivery:
        block = self.connection
        total = sum(f.size for f in package.files)
        fmt = block.payload
        if fmt == "auto":
            fmt = "json" if total <= block.inline_max_bytes else "multipart"
        elif fmt == "json" and total > block.inline_max_bytes:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: {total} bytes of files is more than inline_max_bytes "
                f"({block.inline_max_bytes}) of {self.label}, whose payload is json only; raise the limit "
                f"or set payload to auto or multipart"
            )
        webhook_id = package.idempotency_key
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            if fmt == "json":
                content_type = "application/json"
                self._write_json(package, spool)
            else:
                boundary = f"docroute-{uuid.uuid4().hex}"
                content_type = f"multipart/form-data; boundary={boundary}"
                self._write_multipart(package, spool, boundary)
            size = spool.tell()
            response = self._post(spool, size, content_type, webhook_id, package)
            status = response.status_code
            text = self._answer(response)
        if 200 <= status < 300:
            return Delivery(
                remote_ref=self._remote_ref(response, text) or webhook_id,
                detail={"status": status, "webhook_id": webhook_id, "payload": fmt, "bytes": size},
            )
        raise self._status_error(package, response, text)

    # -- building the body --------------------------------------------------
    def _document(self, package: Package) -> dict[str, Any]:
        return {
            "id": package.doc_id,
            "version": package.version,
            "client": package.client,
            "integration": package.integration,
            "document_type": package.document_type,
            "fields": package.fields,
        }

    @staticmethod
    def _file_meta(f: PackageFile) -> dict[str, Any]:
        return {"name": f.name, "role": f.role, "media_type": f.media_type, "size": f.size, "sha256": f.sha256}

    def _copy(self, package: Package, f: PackageFile, out: BinaryIO, encode: bool) -> None:
        """Stream one source file into the body (base64 if `encode`), verified before anything is sent."""
        try:
            with f.open() as src:
                reader = VerifyingReader(src, f)
                while chunk := reader.read(READ_SIZE):
                    out.write(base64.b64encode(chunk) if encode else chunk)
                reader.verify(package)
        except OSError as exc:
            raise TransientDeliveryError(
                f"document {package.doc_id}: cannot read source file {f.name} for {self.label}: {exc.strerror or exc}"
            ) from None

    def _write_json(self, package: Package, out: BinaryIO) -> None:
        # Written piecewise so the base64 of a large file never exists whole in memory.
        doc = self._document(package)
        head = json.dumps({"type": "document.exported", "mode": self.mode.value, "document": {**doc, "files": []}}, default=str)
        assert head.endswith("[]}}")
        out.write(head[:-3].encode())
        for n, f in enumerate(package.files):
            meta = json.dumps(self._file_meta(f))
            out.write(((", " if n else "") + meta[:-1] + ', "content_base64": "').encode())
            self._copy(package, f, out, encode=True)
            out.write(b'"}')
        out.write(b"]}}")

    def _write_multipart(self, package: Package, out: BinaryIO, boundary: str) -> None:
        doc = self._document(package)
        doc["files"] = [self._file_meta(f) for f in package.files]
        metadata = json.dumps({"type": "document.exported", "mode": self.mode.value, "document": doc}, default=str).encode()
        out.write(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            f"Content-Type: application/json\r\n\r\n".encode()
            + metadata
            + b"\r\n"
        )
        for f in package.files:
            # HTML5 form encoding of a filename: quote, CR and LF percent-encoded, the rest UTF-8.
            name = f.name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
            out.write(
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: {f.media_type}\r\n\r\n".encode()
            )
            self._copy(package, f, out, encode=False)
            out.write(b"\r\n")
        out.write(f"--{boundary}--\r\n".encode())

    # -- sending ------------------------------------------------------------
    def _signature(self, spool: BinaryIO, webhook_id: str, timestamp: str) -> str:
        macs = [hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256) for key in self._keys]
        spool.seek(0)
        while chunk := spool.read(SPOOL_IN_MEMORY):
            for mac in macs:
                mac.update(chunk)
        spool.seek(0)
        return " ".join(f"v1,{base64.b64encode(mac.digest()).decode()}" for mac in macs)

    def _post(
        self, spool: BinaryIO, size: int, content_type: str, webhook_id: str, package: Package | None = None
    ) -> requests.Response:
        if self._session is None:
            self._start_session()
        url = self.url
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "docroute-mode": self.mode.value,  # also in the signed body; the header lets a router act before parsing
        }
        if self._keys:
            headers["webhook-signature"] = self._signature(spool, webhook_id, timestamp)
        spool.seek(0)
        timeout = self.connection.timeout
        try:
            return self._session.post(
                url,
                data=_Body(spool, size),
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise self._request_error(package, exc) from None

    def _request_error(self, package: Package | None, exc: requests.RequestException) -> DeliveryError:
        who = f"document {package.doc_id}: " if package else ""
        cause = _root_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "certificate verify failed"
            return PermanentDeliveryError(
                f"{who}TLS certificate of {self.label} not accepted: {reason}. Fix the endpoint's certificate, or "
                f"set ca_bundle on the connection to the CA that issued it"
            )
        if isinstance(exc, requests.Timeout):
            return TransientDeliveryError(f"{who}{self.label} did not answer within {self.connection.timeout:g} s")
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            reason = getattr(cause, "strerror", None) or type(cause).__name__
            return TransientDeliveryError(f"{who}cannot reach {self.label}: {self._scrub(str(reason))}")
        # Bad URL, bad ca_bundle path and the like: configuration, not the network.
        return PermanentDeliveryError(f"{who}request to {self.label} failed: {type(exc).__name__}")

    # -- answers ------------------------------------------------------------
    def _answer(self, response: requests.Response) -> str:
        """The first characters of the answer, on one line, without secrets."""
        try:
            text = response.content[:4096].decode(response.encoding or "utf-8", "replace")
        except requests.RequestException:
            text = ""
        text = self._scrub(re.sub(r"\s+", " ", text).strip())
        return text[:ANSWER_CHARS] + ("..." if len(text) > ANSWER_CHARS else "")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _remote_ref(response: requests.Response, text: str) -> str | None:
        if response.headers.get("Location"):
            return response.headers["Location"]
        if "json" in response.headers.get("Content-Type", ""):
            try:
                body = response.json()
            except ValueError:
                return None
            if isinstance(body, dict) and isinstance(body.get("id"), (str, int)):
                return str(body["id"])
        return None

    def _status_error(self, package: Package, response: requests.Response, text: str) -> DeliveryError:
        status = response.status_code
        said = f"{self.label} answered {status} {response.reason or ''}".rstrip()
        where = f"document {package.doc_id}: {said}"
        tail = f": {text}" if text else ""
        if status == 410:
            return PermanentDeliveryError(f"{where}: endpoint gone; it asks not to be sent to again{tail}")
        if status == 401:
            return CredentialsRefusedError(
                f"{where}: credentials refused (wrong bearer token, password or signing secret on the connection?){tail}"
            )
        if status in TRANSIENT_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
            return TransientDeliveryError(f"{where}{wait}{tail}", retry_after=retry_after)
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            target = location.split("?", 1)[0] if location else "nowhere"
            return PermanentDeliveryError(
                f"{where}: redirect to {self._scrub(target)} not followed; set the connection's URL to the final address"
            )
        return PermanentDeliveryError(f"{where}{tail}")

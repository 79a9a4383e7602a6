"""Webhook connector: one signed POST per document (Standard Webhooks), over the shared HTTP layer (tasks.http).

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
the webhook-id); 410 = endpoint gone (permanent). Everything else is tasks.http's (one HttpClient
per connector: TLS checked at open(), timeouts, the endpoint's hosts only, classification, Retry-After,
scrubbing): 408, 429, 5xx, connection errors and timeouts transient; redirects not followed; other
4xx permanent; messages name the document and the endpoint, carry the status and at most 300
characters of the answer, scrubbed of secrets. A POST is not retried by the layer (the sync engine
retries per document, with the same webhook-id).

check(): a signed POST of ``{"type": "docroute.check"}`` (a fresh webhook-id each time), the
same request path a document takes, so TLS, authentication and signature are all exercised.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from typing import Any, BinaryIO

import requests

from blocks.webhook import SECRET_PREFIX
from tasks.connectors.base import (
    CheckResult,
    Connector,
    Delivery,
    DeliveryError,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    TransientDeliveryError,
    VerifyingReader,
)
from tasks.http import HttpClient, parse_retry_after

__all__ = ["WebhookConnector", "parse_retry_after"]  # parse_retry_after: moved to tasks.http, still importable here

SPOOL_IN_MEMORY = 1024 * 1024
READ_SIZE = 3 * 256 * 1024  # a multiple of 3: base64 chunks concatenate without padding
USER_AGENT = "docroute-webhook/1"
# The webhook's own words for two answers (tasks.http says "gone" and "credentials refused").
NOTES = {
    410: "endpoint gone; it asks not to be sent to again",
    401: "credentials refused (wrong bearer token, password or signing secret on the connection?)",
}


class _Body:
    """A spooled body with a length, so requests sends Content-Length and streams it."""

    def __init__(self, spool: BinaryIO, size: int):
        self._spool = spool
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        return self._spool.read(n)


class WebhookConnector(Connector):
    """POSTs each package to the connection's URL (test_url in test mode, certification_url or url in
    certification mode), signed. The mode travels in the signed body and a docroute-mode header."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._http: HttpClient | None = None
        self._keys = [
            base64.b64decode(s.get_secret_value()[len(SECRET_PREFIX):]) for s in self.connection.signing_secrets
        ]

    def certification(self) -> str:
        """Ability.CERTIFICATION: certification-mode deliveries go to certification_url (default: url),
        saying "mode": "certification" in the signed body and the docroute-mode header."""
        return f"certification_url {self.connection.label(self.connection.certification_url)}"

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
        """Start the HTTP client and check the endpoint's TLS certificate: a certificate problem is the
        connection's, so the sync run stops before any document is touched (and none is parked for it)."""
        self._start_session()
        try:
            url = self.url
        except DeliveryError:
            return  # no test_url: each document says so
        self._http.check_tls(url)

    def _start_session(self) -> None:
        block = self.connection
        headers = dict(block.headers)
        if block.auth == "bearer":
            headers["Authorization"] = f"Bearer {block.bearer_token.get_secret_value()}"
        self._http = HttpClient(
            self.label,
            hosts=[u for u in (block.url, block.test_url, block.certification_url) if u],
            verify=block.verify_tls,
            ca_bundle=block.ca_bundle,
            timeout=block.timeout,
            headers=headers,
            user_agent=USER_AGENT,
            auth=(block.username, block.password.get_secret_value()) if block.auth == "basic" else None,
            secrets=block.secret_values(),
            notes=NOTES,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- the interface ------------------------------------------------------
    def check(self) -> CheckResult:
        body = json.dumps({"type": "docroute.check", "mode": self.mode.value, "timestamp": int(time.time())}).encode()
        try:
            with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
                spool.write(body)
                response = self._post(spool, len(body), "application/json", f"chk_{uuid.uuid4().hex}", check=False)
                status, text = response.status_code, self._http.answer(response)
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
            response = self._post(spool, size, content_type, webhook_id, package)  # raises unless 2xx
        return Delivery(
            remote_ref=self._remote_ref(response) or webhook_id,
            detail={"status": response.status_code, "webhook_id": webhook_id, "payload": fmt, "bytes": size},
        )

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
        self, spool: BinaryIO, size: int, content_type: str, webhook_id: str, package: Package | None = None,
        check: bool = True,
    ) -> requests.Response:
        if self._http is None:
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
        what = f"document {package.doc_id}" if package else ""
        return self._http.post(url, what=what, data=_Body(spool, size), headers=headers, check=check)

    @staticmethod
    def _remote_ref(response: requests.Response) -> str | None:
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

"""S3 (and S3-compatible) connector: conditional writes, so a retry after a crash is a no-op.

How a file is written:
- Up to `multipart_threshold`: the source is read through VerifyingReader into a spooled
  temporary file (memory up to 1 MiB, then disk, so a 50 MB file is never held twice in
  memory), size and sha256 are verified, and only then is one PutObject sent, with
  `If-None-Match: *` and Content-MD5. A source that breaks or changed never reaches S3.
- Above it: a multipart upload, one part in memory at a time, each with Content-MD5. The
  whole-file check runs after the last part and before CompleteMultipartUpload (the commit
  point, also `If-None-Match: *`); any failure aborts the upload, so no object and no
  pending upload remain.
- Verification (Ability.VERIFY): Content-MD5 on every PutObject / UploadPart, so the store
  rejects a body damaged in transit (BadDigest, retried), Content-Length on single puts, and
  a HEAD after CompleteMultipartUpload that checks the size. No post-put ETag = MD5 check:
  with SSE-KMS and on some compatible stores the ETag is not an MD5.
- 412 on the conditional write = the key exists: identical (x-amz-meta-sha256 and size,
  or an MD5 ETag for objects we did not write) = already delivered; different = the
  connection's `if_exists` policy (replace with `If-Match: <etag>`, or a permanent error).

Metadata: S3 user metadata must be ASCII. Field names are lower-cased to [a-z0-9-];
a value that is not printable ASCII (or has surrounding spaces, or starts with "=?") is
sent RFC 2047 encoded, `=?UTF-8?B?<base64>?=`, the form AWS itself uses and
`email.header.decode_header` reads. Fields that do not fit the 2 KB metadata limit are
dropped (listed in `Delivery.detail["metadata_dropped"]`); the sidecar object keeps them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from blocks.s3 import normalise_prefix
from tasks.connectors.base import (
    CheckResult,
    Connector,
    Delivery,
    DeliveryError,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    RemoteFile,
    TransientDeliveryError,
    VerifyingReader,
)
from tasks.s3 import s3_error

logger = logging.getLogger(__name__)

SPOOL_IN_MEMORY = 1024 * 1024
READ_SIZE = 1024 * 1024
MAX_PARTS = 10_000
METADATA_LIMIT = 2048  # bytes of user metadata keys + values (AWS)
RESERVED_METADATA = ("doc-id", "version", "sha256", "idempotency-key", "document-type")



class _Exists(Exception):
    """A conditional write found the key taken (412): the caller compares and decides."""


@dataclass
class _Written:
    key: str
    already_present: bool
    etag: str = ""
    version_id: str | None = None


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _ascii_safe(value: str) -> str:
    if value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?"):
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode() + "?="


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return str(value)


def _metadata_key(name: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", str(name).lower())).strip("-")


class S3Connector(Connector):
    """Writes each file of a package as one object: key = prefix + package.path_of(file)."""

    _client: Any = None

    # -- lifecycle ----------------------------------------------------------
    def open(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = self.connection.s3_client()
        except (ProfileNotFound, NoCredentialsError, PartialCredentialsError, ValueError) as exc:
            raise PermanentDeliveryError(f"{self.label}: cannot build an S3 client: {self.scrub(str(exc))}") from None
        except (ClientError, BotoCoreError) as exc:  # e.g. assume-role refused
            raise self._error(exc, None, None, "connect") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.open()
        return self._client

    @property
    def label(self) -> str:
        conn = self.connection
        return conn.label(conn.test_prefix if self.mode == Mode.TEST and conn.test_prefix else None)

    @property
    def bucket(self) -> str:
        return self.connection.bucket_name

    def _prefix(self) -> str:
        return normalise_prefix(self.test_setting("test_prefix") if self.mode == Mode.TEST else self.connection.key_prefix)

    def _key(self, package: Package, f: PackageFile) -> str:
        key = self._prefix() + package.path_of(f).lstrip("/")
        if len(key.encode("utf-8")) > 1024:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: object key for {f.name} is longer than S3's 1024 bytes ({self.label})"
            )
        return key

    def files_written(self, package: Package) -> list[PackageFile]:
        if self.connection.metadata == "headers":  # the fields travel as headers only
            return [f for f in package.files if f.role != "sidecar"]
        return list(package.files)

    # -- errors ---------------------------------------------------------------

    def _error(self, exc: Exception, package: Package | None, key: str | None, action: str) -> DeliveryError:
        head = f"document {package.doc_id}: " if package else ""
        return s3_error(exc, bucket=self.bucket, key=key, action=action, label=self.label, head=head, scrub=self.scrub)

    def _call(self, package: Package | None, key: str | None, action: str, fn: Callable[..., Any], **kwargs) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed" or (
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
            ):
                raise _Exists() from None
            raise self._error(exc, package, key, action) from None
        except BotoCoreError as exc:
            raise self._error(exc, package, key, action) from None

    def _head(self, package: Package | None, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, package, key, "head") from None
        except BotoCoreError as exc:
            raise self._error(exc, package, key, "head") from None

    # -- check ----------------------------------------------------------------
    def check(self) -> CheckResult:
        try:
            prefix = self._prefix()
            self._call(None, None, "check", self.client.head_bucket, Bucket=self.bucket)
            probe = f"{prefix}.docroute-probe-{uuid.uuid4().hex}"
            self._call(None, probe, "probe write", self.client.put_object, Bucket=self.bucket, Key=probe,
                       Body=b"probe", IfNoneMatch="*")
            self._call(None, probe, "probe delete", self.client.delete_object, Bucket=self.bucket, Key=probe)
        except DeliveryError as exc:
            return CheckResult(False, str(exc))
        except _Exists:  # a uuid key that exists: the store answers 412 to everything
            return CheckResult(False, f"{self.label}: the store refused a new probe object (412)")
        return CheckResult(True, f"{self.label}: bucket reachable, probe object written and removed")

    # -- lookup / cleanup -------------------------------------------------------
    def _identical(self, head: dict, f: PackageFile, md5hex: str | None = None) -> bool:
        if head.get("ContentLength") != f.size:
            return False
        sha = head.get("Metadata", {}).get("sha256")
        if sha:
            return sha == f.sha256
        etag = head.get("ETag", "").strip('"')
        # Objects docroute did not write: a single-part, non-KMS ETag is the MD5 of the body.
        return bool(md5hex and re.fullmatch(r"[0-9a-f]{32}", etag) and etag == md5hex)

    def lookup(self, package: Package) -> Delivery | None:
        # Every file, not just the main one: a crash after the PDF but before the sidecar
        # (the trigger) must not count as delivered.
        written = []
        for f in self.files_written(package):
            key = self._key(package, f)
            head = self._head(package, key)
            if head is None or not self._identical(head, f):
                return None
            written.append(_Written(key, True, head.get("ETag", ""), head.get("VersionId")))
        return self._delivery(written, [])

    def remove_partial(self, package: Package) -> None:
        for f in self.files_written(package):
            key = self._key(package, f)
            paginator = self.client.get_paginator("list_multipart_uploads")
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
                    for upload in page.get("Uploads", []):
                        if upload["Key"] == key:
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, package, key, "abort of unfinished uploads") from None

    # -- deliver ----------------------------------------------------------------
    def deliver(self, package: Package) -> Delivery:
        metadata, dropped = self._metadata(package)
        written = []
        for f in self.files_written(package):  # document first, sidecar (the trigger) last
            key = self._key(package, f)
            extra: dict[str, Any] = {
                "ContentType": f.media_type or "application/octet-stream",
                "Metadata": {**metadata, "sha256": f.sha256},
            }
            if self.connection.storage_class:
                extra["StorageClass"] = self.connection.storage_class
            if f.size > self.connection.multipart_threshold:
                written.append(self._put_multipart(package, f, key, extra))
            else:
                written.append(self._put_single(package, f, key, extra))
        return self._delivery(written, dropped)

    def _delivery(self, written: list[_Written], dropped: list[str]) -> Delivery:
        detail: dict[str, Any] = {
            "bucket": self.bucket,
            "keys": [w.key for w in written],
            "etags": [w.etag for w in written],
        }
        if any(w.version_id for w in written):
            detail["version_ids"] = [w.version_id for w in written]
        if dropped:
            detail["metadata_dropped"] = dropped
        return Delivery(
            remote_ref=f"s3://{self.bucket}/{written[0].key}",
            already_present=all(w.already_present for w in written),
            detail=detail,
        )

    def _metadata(self, package: Package) -> tuple[dict[str, str], list[str]]:
        """x-amz-meta-* for every object of the package (sha256 is added per file)."""
        meta = {"doc-id": package.doc_id, "version": package.version, "idempotency-key": package.idempotency_key}
        if package.document_type:
            meta["document-type"] = package.document_type
        meta = {k: _ascii_safe(str(v)) for k, v in meta.items()}
        used = sum(len(k) + len(v) for k, v in meta.items()) + len("sha256") + 64
        dropped: list[str] = []
        if self.connection.metadata == "sidecar":
            return meta, dropped
        for name, value in package.fields.items():
            text = _text(value)
            key = _metadata_key(name)
            if text is None or not key:
                continue
            if key in RESERVED_METADATA:
                key = f"field-{key}"
            value_safe = _ascii_safe(text)
            if key in meta or used + len(key) + len(value_safe) > METADATA_LIMIT:
                dropped.append(str(name))
                continue
            meta[key] = value_safe
            used += len(key) + len(value_safe)
        if dropped:
            logger.warning(
                "document %s: fields %s not sent as S3 metadata (duplicate name or over the 2 KB limit)",
                package.doc_id, ", ".join(dropped),
            )
        return meta, dropped

    def _read(self, reader: VerifyingReader, n: int, package: Package, f: PackageFile) -> bytes:
        try:
            return reader.read(n)
        except OSError as exc:
            raise TransientDeliveryError(
                f"document {package.doc_id}: cannot read source file {f.name} for {self.label}: {exc.strerror or exc}"
            ) from None

    def _put_single(self, package: Package, f: PackageFile, key: str, extra: dict) -> _Written:
        md5 = hashlib.md5()
        with f.open() as src, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            reader = VerifyingReader(src, f)
            while chunk := self._read(reader, READ_SIZE, package, f):
                md5.update(chunk)
                spool.write(chunk)
            reader.verify(package)  # before anything is sent: a short or changed source never lands

            def put(action: str = "upload", **condition: str) -> dict:
                spool.seek(0)
                return self._call(package, key, action, self.client.put_object, Bucket=self.bucket, Key=key,
                                  Body=spool, ContentLength=f.size,
                                  ContentMD5=base64.b64encode(md5.digest()).decode(), **extra, **condition)

            try:
                response = put(IfNoneMatch="*")
            except _Exists:
                head = self._head(package, key)
                if head is None:  # deleted between our write and our look: the retry will create it
                    raise TransientDeliveryError(
                        f"document {package.doc_id}: s3://{self.bucket}/{key} on {self.label} changed during the upload"
                    ) from None
                if self._identical(head, f, md5.hexdigest()):
                    return _Written(key, True, head.get("ETag", ""), head.get("VersionId"))
                self._refuse_if_policy_fails(package, key)
                response = self._replace(package, key, lambda: put("replace", IfMatch=head["ETag"]))
        return _Written(key, False, response.get("ETag", ""), response.get("VersionId"))

    def _refuse_if_policy_fails(self, package: Package, key: str) -> None:
        if self.connection.if_exists == "fail":
            raise PermanentDeliveryError(
                f"document {package.doc_id}: s3://{self.bucket}/{key} on {self.label} already exists with other "
                f"content (connection policy if_exists=fail)"
            )

    def _replace(self, package: Package, key: str, write: Callable[[], dict]) -> dict:
        try:
            return write()
        except _Exists:  # If-Match failed: someone replaced it since we looked
            raise TransientDeliveryError(
                f"document {package.doc_id}: s3://{self.bucket}/{key} on {self.label} changed while being replaced"
            ) from None

    def _put_multipart(self, package: Package, f: PackageFile, key: str, extra: dict) -> _Written:
        # Look first: re-sending 50 MB only to be told 412 is a waste.
        head = self._head(package, key)
        if head is not None:
            if self._identical(head, f):
                return _Written(key, True, head.get("ETag", ""), head.get("VersionId"))
            self._refuse_if_policy_fails(package, key)
        condition = {"IfMatch": head["ETag"]} if head is not None else {"IfNoneMatch": "*"}
        chunksize = max(self.connection.multipart_chunksize, -(-f.size // MAX_PARTS))
        upload = self._call(package, key, "multipart start", self.client.create_multipart_upload,
                            Bucket=self.bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            with f.open() as src:
                reader = VerifyingReader(src, f)
                while chunk := self._read_full(reader, chunksize, package, f):
                    number = len(parts) + 1
                    part = self._call(package, key, f"upload of part {number}", self.client.upload_part,
                                      Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
                                      ContentLength=len(chunk), ContentMD5=_md5_b64(chunk))
                    parts.append({"PartNumber": number, "ETag": part["ETag"]})
                    del chunk
                reader.verify(package)  # the commit point is below: nothing lands unless the source was whole
            try:
                response = self._call(package, key, "multipart complete", self.client.complete_multipart_upload,
                                      Bucket=self.bucket, Key=key, UploadId=upload_id,
                                      MultipartUpload={"Parts": parts}, **condition)
            except _Exists:
                raise TransientDeliveryError(
                    f"document {package.doc_id}: s3://{self.bucket}/{key} on {self.label} was written by someone "
                    f"else during the upload; the retry will compare it"
                ) from None
        except BaseException:
            self._abort(key, upload_id)
            raise
        written = self._head(package, key)
        if written is None or written.get("ContentLength") != f.size:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: s3://{self.bucket}/{key} on {self.label} holds "
                f"{None if written is None else written.get('ContentLength')} bytes after the upload, expected {f.size}"
            )
        return _Written(key, False, response.get("ETag", ""), response.get("VersionId"))

    def _read_full(self, reader: VerifyingReader, n: int, package: Package, f: PackageFile) -> bytearray:
        """Exactly n bytes unless the source ends: S3 parts other than the last must be >= 5 MiB."""
        buf = bytearray()
        while len(buf) < n:
            data = self._read(reader, min(n - len(buf), 8 * READ_SIZE), package, f)
            if not data:
                break
            buf += data
        return buf

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # remove_partial (Ability.REMOVE_PARTIAL) cleans it up on the next attempt.
            logger.warning("could not abort the multipart upload of s3://%s/%s on %s: %s",
                           self.bucket, key, self.label, self.scrub(str(exc)))

    # -- reconciliation ---------------------------------------------------------
    def inventory(self, prefix: str = "", hashes: bool = False):
        """Ability.INVENTORY: every object under the connection's prefix (+ `prefix`); unfinished
        multipart uploads flagged as partial. With `hashes`, the sha256 docroute stored in each
        object's metadata (one HEAD per object)."""
        base = self._prefix()
        start = base + prefix.lstrip("/")
        found: list[RemoteFile] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    digest = None
                    if hashes:
                        head = self._head(None, key)
                        digest = (head or {}).get("Metadata", {}).get("sha256")
                    found.append(RemoteFile(key[len(base):], obj.get("Size", 0), f"s3://{self.bucket}/{key}", False, digest))
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=start):
                for upload in page.get("Uploads", []):
                    key = upload["Key"]
                    found.append(RemoteFile(key[len(base):], 0, f"s3://{self.bucket}/{key}", True))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, None, start or None, "listing") from None
        return found

"""Capture inbox under a prefix of an S3 bucket (block `s3-inbox`), through an S3 connection block.

The inbox convention is tasks/sources/inbox.py's; this module is the S3 store: one listing per scan
(ListObjectsV2 with a delimiter, so only the objects directly under the prefix: not archive/),
objects streamed from GetObject, and archive after transfer as a copy under `<prefix>archive/`
followed by a delete of the original (S3 has no rename). An object's fingerprint is its size and
ETag. S3 has no symbolic links.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from blocks.s3 import normalise_prefix
from tasks.errors import RemoteError
from tasks.s3 import s3_error
from tasks.secrets import scrub
from tasks.sources.inbox import ARCHIVE, Entry, InboxSource, InboxStore

_MISSING = ("404", "NoSuchKey", "NotFound")


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


class S3Store(InboxStore):
    """An inbox under a key prefix of a bucket."""

    def __init__(self, block):
        self.block = block
        self.label = block.label()
        self.bucket = block.connection.bucket_name
        self.prefix = normalise_prefix(block.prefix)
        self._client = None

    def open_session(self) -> None:
        if self._client is None:
            try:
                self._client = self.block.connection.s3_client()
            except (ClientError, BotoCoreError, ValueError) as exc:
                raise self._error(exc, None, "connect") from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def client(self):
        self.open_session()
        return self._client

    def _error(self, exc: Exception, key: str | None, action: str) -> RemoteError:
        return s3_error(exc, bucket=self.bucket, key=key, action=action, label=self.label,
                        scrub=lambda text: scrub(text, self.block.secret_values()))

    def _key(self, name: str, archived: bool = False) -> str:
        return f"{self.prefix}{ARCHIVE}/{name}" if archived else f"{self.prefix}{name}"

    def entries(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if name:
                        out[name] = Entry(name, obj["Size"], _ts(obj["LastModified"]), obj.get("ETag", "").strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, self.prefix or None, "list") from None
        return out

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise self._error(exc, key, "head") from None
        except BotoCoreError as exc:
            raise self._error(exc, key, "head") from None

    def entry(self, name: str) -> Entry | None:
        head = self._head(self._key(name))
        if head is None:
            return None
        return Entry(name, head["ContentLength"], _ts(head["LastModified"]), head.get("ETag", "").strip('"'))

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def open(self, name: str) -> BinaryIO:
        key = self._key(name)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(2, f"{name} is no longer in {self.label}") from None
            raise OSError(5, str(self._error(exc, key, "get"))) from None
        except BotoCoreError as exc:
            raise OSError(5, str(self._error(exc, key, "get"))) from None

    def archive(self, names: list[str]) -> None:
        for name in names:
            key = self._key(name)
            try:
                if self._head(key) is None:
                    continue  # archived already (or gone): idempotent
                self.client.copy_object(Bucket=self.bucket, Key=self._key(name, archived=True), CopySource={"Bucket": self.bucket, "Key": key})
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, key, "archive") from None

    def archived(self, name: str) -> bool:
        return self._head(self._key(name, archived=True)) is not None


class S3InboxSource(InboxSource):
    """Documents from an S3Inbox block's prefix."""

    def __init__(self, block):
        super().__init__(block, S3Store(block))

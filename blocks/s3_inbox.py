"""Source block for a capture inbox under a prefix of an S3 bucket, reached through an S3 connection block."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from blocks.base import SourceBlock
from blocks.s3 import S3Connection, normalise_prefix


class S3Inbox(SourceBlock):
    """A prefix in an S3 bucket (or S3-compatible store) where a capture system drops <id>.pdf and <id>.json objects.

    The bucket and credentials come from an S3 connection block (`bucket_name` and its AWS
    credentials; its key_prefix is not used: `prefix` here names the inbox). Objects are
    streamed, never held whole; archive after transfer moves them under `<prefix>archive/`
    (copy, then delete), once their delivery is recorded.

    Example:
        ```python
        from blocks.s3 import S3Connection
        from blocks.s3_inbox import S3Inbox
        S3Inbox(connection=S3Connection.load("capture-bucket"), prefix="outbox/approved/").save("capture-s3")
        ```
    """

    _block_type_name: ClassVar[str] = "S3 Inbox"
    _block_type_slug: ClassVar[str] = "s3-inbox"
    _description: ClassVar[str] = "A capture inbox under an S3 prefix: <id>.pdf and <id>.json objects."

    connection: S3Connection = Field(description="The S3 connection block: bucket and credentials.")
    prefix: str = Field(default="", description="Key prefix of the inbox, e.g. 'outbox/approved/' (a trailing '/' is added).")
    settle_seconds: float = Field(
        default=2.0,
        description="An object written less than this many seconds ago (by the store's clock) is left for the next run.",
    )

    def label(self) -> str:
        c = self.connection
        return f"s3 inbox s3://{c.bucket_name}/{normalise_prefix(self.prefix)} ({c.endpoint_label()})"

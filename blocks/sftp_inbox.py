"""Source block for a capture inbox on an SFTP server, reached through an SFTP connection block."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from blocks.base import SourceBlock
from blocks.sftp import SftpConnection


class SftpInbox(SourceBlock):
    """A folder on an SFTP server where a capture system drops <id>.pdf (plus extra files) and <id>.json.

    The server, login and pinned host key come from an SFTP connection block (the same kind
    that delivers documents), so one connection can serve as inbox and as destination. Files
    are streamed, never held whole; archive after transfer renames them into `archive/` on the
    server, once their delivery is recorded. Symbolic links in the folder are never followed.

    Example:
        ```python
        from blocks.sftp import SftpConnection
        from blocks.sftp_inbox import SftpInbox
        SftpInbox(
            connection=SftpConnection.load("capture-sftp"),
            folder="/outbox/approved",
        ).save("capture-outbox")
        ```
    """

    _block_type_name: ClassVar[str] = "SFTP Inbox"
    _block_type_slug: ClassVar[str] = "sftp-inbox"
    _description: ClassVar[str] = "A capture inbox folder on an SFTP server: <id>.pdf and <id>.json pairs."

    connection: SftpConnection = Field(description="The SFTP connection block: server, login and pinned host key.")
    folder: str = Field(description="Inbox folder on the server (absolute, or relative to the login folder).")
    settle_seconds: float = Field(
        default=2.0,
        description="A file modified less than this many seconds ago (by the server's clock) is taken as still "
        "being written and left for the next run.",
    )

    def label(self) -> str:
        c = self.connection
        folder = self.folder if self.folder.startswith("/") else f"/~/{self.folder}"
        return f"sftp inbox {c.username}@{c.host}:{c.port}{folder}"

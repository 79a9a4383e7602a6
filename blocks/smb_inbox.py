"""Source block for a capture inbox on an SMB share, reached through an SMB connection block."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from blocks.base import SourceBlock
from blocks.smb import SmbConnection


class SmbInbox(SourceBlock):
    """A folder on an SMB share where a capture system drops <id>.pdf (plus extra files) and <id>.json.

    The server, share and login come from an SMB connection block (the same kind that delivers
    documents). One directory listing per scan; files streamed, never held whole; archive after
    transfer renames them into `archive/` in the folder. Reparse points (symbolic links, junctions)
    are never followed.

    Example:
        ```python
        from blocks.smb import SmbConnection
        from blocks.smb_inbox import SmbInbox
        SmbInbox(connection=SmbConnection.load("scanner-share"), folder="Approved").save("scanner-inbox")
        ```
    """

    _block_type_name: ClassVar[str] = "SMB Inbox"
    _block_type_slug: ClassVar[str] = "smb-inbox"
    _description: ClassVar[str] = "A capture inbox folder on an SMB share: <id>.pdf and <id>.json pairs."

    connection: SmbConnection = Field(description="The SMB connection block: server, share, login.")
    folder: str = Field(default="", description="Inbox folder in the share ('' = the share's root).")
    settle_seconds: float = Field(
        default=2.0,
        description="A file modified less than this many seconds ago (by the server's clock) is taken as still being "
        "written and left for the next run.",
    )

    def label(self) -> str:
        c = self.connection
        folder = self.folder.strip("/\\").replace("/", "\\")
        return f"smb inbox {c.username}@{c.host}:{c.port}\\{c.share}" + (f"\\{folder}" if folder else "")

"""Source block for a capture inbox in a Dropbox folder, polled with Dropbox's list_folder cursor."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from blocks.base import SourceBlock
from blocks.dropbox import DropboxConnection


class DropboxInbox(SourceBlock):
    """A Dropbox folder where a client drops <id>.pdf (plus extra files) and <id>.json.

    Polled with files/list_folder and its cursor (files/list_folder/continue), kept as the source's
    cursor; a cursor Dropbox resets means a full listing, de-duplicated by the ledger. Archive after
    transfer moves the files into `archive/` in the folder.

    Example:
        ```python
        from blocks.dropbox import DropboxConnection
        from blocks.dropbox_inbox import DropboxInbox
        DropboxInbox(connection=DropboxConnection.load("acme-dropbox"), folder="/Scans/Approved").save("acme-drop")
        ```
    """

    _block_type_name: ClassVar[str] = "Dropbox Inbox"
    _block_type_slug: ClassVar[str] = "dropbox-inbox"
    _description: ClassVar[str] = "A capture inbox in a Dropbox folder (<id>.pdf and <id>.json), polled with list_folder cursors."

    connection: DropboxConnection = Field(description="The Dropbox connection block: app, tokens, team settings.")
    folder: str = Field(description="The inbox folder, e.g. /Scans/Approved.")
    settle_seconds: float = Field(
        default=0.0,
        description="A file modified less than this many seconds ago (Dropbox's server_modified) is left for the next "
        "run. Dropbox shows a file only once its upload is complete, so 0 is the default.",
    )

    def label(self) -> str:
        return f"dropbox inbox {self.folder}"

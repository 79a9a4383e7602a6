"""Source block for a capture inbox in a Google Drive folder, polled with Drive's changes feed."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from blocks.base import SourceBlock
from blocks.gdrive import GoogleDriveConnection


class GoogleDriveInbox(SourceBlock):
    """A Google Drive folder where a client drops <id>.pdf (plus extra files) and <id>.json.

    Polled with changes.list from a page token (changes.getStartPageToken first), kept as the
    source's cursor; the feed is drive-wide and filtered to this folder by the files' parents. A
    token Drive rejects means a full listing, de-duplicated by the ledger. Names are not unique in
    Drive: of two files with one name in the folder, the one modified last is read [assumption].
    Archive after transfer moves the files into `archive/` in the folder (addParents/removeParents).

    Example:
        ```python
        from blocks.gdrive import GoogleDriveConnection
        from blocks.gdrive_inbox import GoogleDriveInbox
        GoogleDriveInbox(connection=GoogleDriveConnection.load("acme-drive"), folder="Scans/Approved").save("acme-drop")
        ```
    """

    _block_type_name: ClassVar[str] = "Google Drive Inbox"
    _block_type_slug: ClassVar[str] = "google-drive-inbox"
    _description: ClassVar[str] = "A capture inbox in a Google Drive folder (<id>.pdf and <id>.json), polled with the changes feed."

    connection: GoogleDriveConnection = Field(description="The Google Drive connection block: credentials, shared drive.")
    folder_id: str | None = Field(default=None, description="The inbox folder's id (or leave empty and give `folder`).")
    folder: str = Field(default="", description="The inbox folder's path under the connection's folder_id (or drive root).")
    metadata: Literal["json", "properties"] = Field(
        default="json",
        description="json: each document is <id>.pdf (plus extra files) and <id>.json (the inbox convention). "
        "properties: each <id>.pdf carries its metadata in its own Drive properties (files.properties): client, type, status, approved_at, "
        "sub_organisation, tags (comma-separated), version, and meta_<field> for each metadata field (meta_number).",
    )
    settle_seconds: float = Field(
        default=0.0,
        description="A file modified less than this many seconds ago (Drive's modifiedTime) is left for the next run. "
        "An upload shows as a file only once complete, so 0 is the default.",
    )

    def label(self) -> str:
        return f"google drive inbox {self.folder_id or self.folder or '/'}"

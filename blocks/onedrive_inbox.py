"""Source block for a capture inbox in a OneDrive or SharePoint folder, polled with Graph's delta."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from blocks.base import SourceBlock
from blocks.onedrive import OneDriveConnection


class OneDriveInbox(SourceBlock):
    """A OneDrive or SharePoint folder where a client drops <id>.pdf (plus extra files) and <id>.json.

    Polled with the drive's delta (GET /drives/{id}/root/delta: Graph documents delta on the root
    only, and older docs say folder delta does not work on OneDrive for Business, so the feed is the
    drive's, filtered to this folder by parentReference.id); the deltaLink is the source's cursor; a
    410 resync means a full listing, de-duplicated by the ledger. Archive after transfer moves the
    files into `archive/` in the folder.

    Example:
        ```python
        from blocks.onedrive import OneDriveConnection
        from blocks.onedrive_inbox import OneDriveInbox
        OneDriveInbox(connection=OneDriveConnection.load("contoso-sharepoint"), folder="/Scans/Approved").save("contoso-drop")
        ```
    """

    _block_type_name: ClassVar[str] = "OneDrive Inbox"
    _block_type_slug: ClassVar[str] = "onedrive-inbox"
    _description: ClassVar[str] = "A capture inbox in a OneDrive/SharePoint folder (<id>.pdf and <id>.json), polled with Graph delta."

    connection: OneDriveConnection = Field(description="The OneDrive connection block: tenant, app, drive.")
    folder: str = Field(description="The inbox folder in the drive, e.g. /Scans/Approved.")
    metadata: Literal["json", "properties"] = Field(
        default="json",
        description="json: each document is <id>.pdf (plus extra files) and <id>.json (the inbox convention). "
        "properties: each <id>.pdf carries its metadata in its own SharePoint columns (list item fields): client, type, status, approved_at, "
        "sub_organisation, tags (comma-separated), version, and meta_<field> for each metadata field (meta_number).",
    )
    settle_seconds: float = Field(
        default=0.0,
        description="A file modified less than this many seconds ago (Graph's lastModifiedDateTime) is left for the next "
        "run. An upload shows as a file only once complete, so 0 is the default.",
    )

    def label(self) -> str:
        return f"onedrive inbox {self.connection.drive_id or self.connection.site_id or self.connection.user or 'me'} {self.folder}"

"""Connection block for a local (or mounted network) folder."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from blocks.base import ConnectionBlock

ExistingPolicy = Literal["skip_identical", "overwrite", "fail"]


class LocalFolderConnection(ConnectionBlock):
    """Deliver documents into a folder on this machine or a mounted share.

    Example:
        ```python
        from blocks.local_folder import LocalFolderConnection
        LocalFolderConnection(base_folder="/srv/export", test_folder="/srv/export-test").save("erp-drop")
        ```
    """

    _block_type_name: ClassVar[str] = "Local Folder Connection"
    _block_type_slug: ClassVar[str] = "local-folder-connection"
    _logo_url: ClassVar[str] = "https://cdn.sanity.io/images/3ugk85nk/production/13fb0ca5ee1bd0ce5cf3b79ad69a0ddc3e1f1a47-250x250.png"
    _description: ClassVar[str] = "A folder that receives exported documents (atomic writes: temp name, then rename)."

    base_folder: str = Field(description="Absolute folder documents are written under.")
    test_folder: str | None = Field(
        default=None, description="Folder used instead of base_folder when an integration runs in test mode."
    )
    if_exists: ExistingPolicy = Field(
        default="skip_identical",
        description="When the target file exists: skip_identical (no-op if identical, replace if not), "
        "overwrite (always replace), fail (error unless identical).",
    )
    fsync: bool = Field(default=True, description="fsync each file before renaming it into place.")

    def label(self) -> str:
        return f"local folder {self.base_folder}"

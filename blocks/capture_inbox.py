"""Source block for a capture inbox: a folder where a capture system drops <id>.pdf + <id>.json."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from blocks.base import SourceBlock


class CaptureInboxFolder(SourceBlock):
    """A folder a capture system writes approved documents to, as <id>.pdf (plus extra files) and <id>.json.

    Example:
        ```python
        from blocks.capture_inbox import CaptureInboxFolder
        CaptureInboxFolder(path="/srv/capture/outbox").save("main-inbox")
        ```
    """

    _block_type_name: ClassVar[str] = "Capture Inbox Folder"
    _block_type_slug: ClassVar[str] = "capture-inbox-folder"
    _description: ClassVar[str] = "Folder a capture system drops document PDFs and JSON metadata into."

    path: str = Field(description="Folder holding <id>.pdf and <id>.json pairs.")
    settle_seconds: float = Field(
        default=2.0,
        description="A file modified less than this many seconds ago is taken as still being written "
        "and left for the next run.",
    )

    def label(self) -> str:
        return f"capture inbox {self.path}"

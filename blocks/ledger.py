"""Block holding the ledger database URL, so a password never sits in an environment variable."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class LedgerDatabase(Block):
    """The ledger's SQLAlchemy URL, kept secret (it may hold a password).

    Example:
        ```python
        from blocks.ledger import LedgerDatabase
        LedgerDatabase(url="postgresql+psycopg2://docroute:pw@db:5432/docroute").save("prod")
        # then run flows with DOCROUTE_LEDGER_BLOCK=prod
        ```
    """

    _block_type_name: ClassVar[str] = "Ledger Database"
    _block_type_slug: ClassVar[str] = "ledger-database"
    _description: ClassVar[str] = "SQLAlchemy URL of docroute's ledger (SQLite or PostgreSQL)."

    url: SecretStr = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg2://user:password@host:5432/db.")

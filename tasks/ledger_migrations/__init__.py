"""Alembic migrations of the ledger's schema (tasks/ledger.py), run in-process by `Ledger()`.

    versions/0001_initial.py                      the schema as docroute wrote it before migrations existed
    versions/0002_opaque_cursor_and_confirmation  the cursor becomes the source's opaque text (its time
                                                  kept as checked_until); documents gain detail and submitted_at
    versions/0003_remote_path                     documents gain remote_path (no silent overwrite)

A ledger without an alembic_version table but with its tables is a 0001 ledger: it is stamped 0001
and upgraded, every row kept. A new ledger is created from tasks.ledger.metadata and stamped at the
newest revision. Add a revision: a new file in versions/ with down_revision set to the last one,
and SCHEMA_VERSION in tasks/ledger.py set to it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


def upgrade(connection, *, stamp_only: bool = False, legacy: bool = False) -> None:
    """Upgrade the database behind `connection` (inside its transaction) to the newest revision.

    stamp_only: the schema is already the newest (just created): only record the revision.
    legacy: a ledger from before migrations: it is revision 0001."""
    config = _config(connection)
    if stamp_only:
        command.stamp(config, "head")
        return
    if legacy:
        command.stamp(config, "0001")
    command.upgrade(config, "head")

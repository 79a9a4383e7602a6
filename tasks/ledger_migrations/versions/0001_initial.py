"""The ledger as docroute wrote it before migrations existed (cursor position a datetime).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from tasks.ledger import UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("integration", sa.String(200), nullable=False),
        sa.Column("doc_id", sa.String(300), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("remote_ref", sa.Text),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("sending_since", UTCDateTime()),
        sa.Column("approved_at", UTCDateTime()),
        sa.Column("fingerprint", sa.Text),
        sa.Column("doc_type", sa.String(100)),
        sa.Column("number", sa.String(200)),
        sa.Column("supplier", sa.String(300)),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_run", sa.String(64)),
        sa.UniqueConstraint("integration", "doc_id", "version", name="uq_documents_key"),
    )
    op.create_index("ix_documents_status", "documents", ["integration", "status"])
    op.create_table(
        "cursors",
        sa.Column("integration", sa.String(200), primary_key=True),
        sa.Column("position", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_run", sa.String(64)),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("integration", sa.String(200), nullable=False),
        sa.Column("doc_id", sa.String(300)),
        sa.Column("version", sa.String(100)),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("run", sa.String(64)),
    )
    op.create_index("ix_events_doc", "events", ["integration", "doc_id"])
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("integration", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_run", sa.String(64)),
    )
    op.create_table(
        "backfill_chunks",
        sa.Column("backfill", sa.String(64), nullable=False),
        sa.Column("chunk_start", UTCDateTime(), nullable=False),
        sa.Column("chunk_end", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("summary", sa.Text),
        sa.Column("run", sa.String(64)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("backfill", "chunk_start"),
    )

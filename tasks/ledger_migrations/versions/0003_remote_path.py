"""documents.remote_path: the path a version was mapped to, so a second document mapped to a path another
document holds is refused instead of written over it.

Revision ID: 0003
Revises: 0002

Rows written before this revision have none: their documents hold their paths again when they are
next delivered.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("remote_path", sa.Text))
    op.create_index("ix_documents_remote_path", "documents", ["integration", "remote_path"])

"""The cursor becomes the source's opaque text; documents gain detail and submitted_at (later confirmation).

Revision ID: 0002
Revises: 0001

cursors.position (a datetime: the last scheduled run's window end) moves to checked_until, and
position becomes text holding that time in ISO form, which is what the capture inbox's cursor is.
Every row is kept.
"""

import sqlalchemy as sa
from alembic import op

from tasks.ledger import UTCDateTime

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("detail", sa.Text))
        batch.add_column(sa.Column("submitted_at", UTCDateTime()))
    with op.batch_alter_table("cursors") as batch:
        batch.add_column(sa.Column("checked_until", UTCDateTime()))
        batch.add_column(sa.Column("position_text", sa.Text))
    bind = op.get_bind()
    cursors = sa.table(
        "cursors",
        sa.column("integration", sa.String),
        sa.column("position", UTCDateTime()),
        sa.column("checked_until", UTCDateTime()),
        sa.column("position_text", sa.Text),
    )
    for integration, position in bind.execute(sa.select(cursors.c.integration, cursors.c.position)).all():
        bind.execute(
            cursors.update()
            .where(cursors.c.integration == integration)
            .values(checked_until=position, position_text=position.isoformat() if position else None)
        )
    with op.batch_alter_table("cursors") as batch:
        batch.drop_column("position")
        batch.alter_column("position_text", new_column_name="position")

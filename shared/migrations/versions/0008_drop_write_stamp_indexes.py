"""Drop the indexes on prediction.created_at and track.updated_at (migration 0005): no query reads by
them since the resident answers follow the outbox, and every index is one more B-tree insert for each
row of a bulk write (a week's 200,400 predictions, 100,000 songs)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 19:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_track_updated_at", "track", "updated_at"),
    ("ix_prediction_created_at", "prediction", "created_at"),
)


def upgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])

"""Indexes on the write stamps (snapshot.updated_at, track.updated_at, prediction.created_at): the predictor's
resident REST answers look for the songs written since its last look, which otherwise scans those tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 21:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_snapshot_updated_at", "snapshot", "updated_at"),
    ("ix_track_updated_at", "track", "updated_at"),
    ("ix_prediction_created_at", "prediction", "created_at"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)

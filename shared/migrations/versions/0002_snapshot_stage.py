"""snapshot_stage: snapshot rows of unfinished ingest runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 18:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshot_stage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("track_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("popularity", sa.Integer(), nullable=True),
        sa.Column("popularity_source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("trending", sa.Boolean(), nullable=False),
        sa.Column("is_demo", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("track_id", "week", name="uq_snapshot_stage_track_week"),
    )


def downgrade() -> None:
    op.drop_table("snapshot_stage")

"""unknown_track: ids Spotify does not know, remembered for a while so nobody asks for them again

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "unknown_track",
        sa.Column("track_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("checked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("track_id"),
    )
    op.create_index("ix_unknown_track_checked_at", "unknown_track", ["checked_at"])


def downgrade() -> None:
    op.drop_index("ix_unknown_track_checked_at", table_name="unknown_track")
    op.drop_table("unknown_track")

"""The index on snapshot.week also holds `trending`: a week's trending songs (the predictor's batch) and
the latest trending week are read from the index alone (with `week` only, each of 100,000 songs' rows was
read for its flag, and the server preferred to scan every week's rows: seconds, growing with history).
Still one secondary index: writes cost the same.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 23:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_snapshot_week", table_name="snapshot")
    op.create_index("ix_snapshot_week", "snapshot", ["week", "trending"])


def downgrade() -> None:
    op.drop_index("ix_snapshot_week", table_name="snapshot")
    op.create_index("ix_snapshot_week", "snapshot", ["week"])

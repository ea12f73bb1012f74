"""snapshot: the natural key (track_id, week) as the primary key, without the surrogate id, its unique
index and the unused index on updated_at (the resident answers read the outbox, not the write stamps)

Each index is one more B-tree insert for every row a bulk write stores; with the key clustered, a row
that exists is found where it would be inserted. Measured on 200,000 rows staged in a MEMORY table
(`INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`, MariaDB 10.11): about 40% less server time for new
rows, and rows that exist cost no more than new ones (they collided on the unique index after a
primary-key insert before, unless their ids were looked up first).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":  # one ALTER: the table is rebuilt once
        op.execute(
            "ALTER TABLE snapshot DROP PRIMARY KEY, DROP COLUMN id, ADD PRIMARY KEY (track_id, week), "
            "DROP INDEX uq_snapshot_track_week, DROP INDEX ix_snapshot_updated_at"
        )
        return
    op.drop_index("ix_snapshot_updated_at", table_name="snapshot")
    with op.batch_alter_table("snapshot", recreate="always") as batch:
        batch.drop_constraint("uq_snapshot_track_week", type_="unique")
        batch.drop_column("id")
        batch.create_primary_key("pk_snapshot", ["track_id", "week"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.execute(
            "ALTER TABLE snapshot DROP PRIMARY KEY, ADD COLUMN id INTEGER NOT NULL AUTO_INCREMENT FIRST, "
            "ADD PRIMARY KEY (id), ADD CONSTRAINT uq_snapshot_track_week UNIQUE (track_id, week), "
            "ADD INDEX ix_snapshot_updated_at (updated_at)"
        )
        return
    with op.batch_alter_table("snapshot", recreate="always") as batch:
        batch.add_column(sa.Column("id", sa.Integer(), nullable=True))
    op.execute("UPDATE snapshot SET id = rowid")
    with op.batch_alter_table("snapshot", recreate="always") as batch:
        batch.drop_constraint("pk_snapshot", type_="primary")
        batch.alter_column("id", existing_type=sa.Integer(), nullable=False)
        batch.create_primary_key("pk_snapshot_id", ["id"])
        batch.create_unique_constraint("uq_snapshot_track_week", ["track_id", "week"])
    op.create_index("ix_snapshot_updated_at", "snapshot", ["updated_at"])

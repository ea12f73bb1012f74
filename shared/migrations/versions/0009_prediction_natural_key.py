"""prediction: the natural key (week, track_id, signal, region, horizon_weeks) as the primary key,
without the surrogate id and its unique index (as `snapshot` in 0007), an index on track_id instead of
the one on week (which the key leads with); the values DOUBLE instead of FLOAT

A bulk write's row then collides where it would be inserted (a week's rows lie together: a new week
appends), and a song's rows of a week are one lookup of the key instead of a secondary index and a
primary-key lookup per row. Week first, not track_id first: measured with `make bench-db`, a key led by
track_id spread each week's rows over every page of the table and wrote 20-30% slower than the surrogate
id; week first writes faster than the id (the figures: docs/operations.md). FLOAT kept ~6 significant
digits: what was read back (messages rebuilt after a crash, the REST answers) differed from what was
computed and published. Values stored before stay what FLOAT held (widened exactly; the next week's
batch writes full ones).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["week", "track_id", "signal", "region", "horizon_weeks"]
UNIQUE = ["track_id", "week", "signal", "region", "horizon_weeks"]  # the unique key before
VALUES = {"current": True, "value": False, "lower": True, "upper": True, "p_chart": True}  # name: nullable


def _modify(kind: str) -> str:
    return ", ".join(f"MODIFY `{name}` {kind}{'' if null else ' NOT NULL'}" for name, null in VALUES.items())


def _retype(batch: BatchOperations, old: sa.types.TypeEngine[float], new: sa.types.TypeEngine[float]) -> None:
    for name, null in VALUES.items():
        batch.alter_column(name, existing_type=old, type_=new, existing_nullable=null)


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":  # one ALTER: the table is rebuilt once
        key = ", ".join(f"`{k}`" for k in KEY)
        op.execute(
            f"ALTER TABLE prediction DROP PRIMARY KEY, DROP COLUMN id, ADD PRIMARY KEY ({key}), "
            "DROP INDEX uq_prediction_key, DROP INDEX ix_prediction_week, "
            f"ADD INDEX ix_prediction_track_id (track_id), {_modify('DOUBLE')}"
        )
        return
    op.drop_index("ix_prediction_week", table_name="prediction")
    with op.batch_alter_table("prediction", recreate="always") as batch:
        batch.drop_constraint("uq_prediction_key", type_="unique")
        batch.drop_column("id")
        batch.create_primary_key("pk_prediction", KEY)
        _retype(batch, sa.Float(), sa.Double())
    op.create_index("ix_prediction_track_id", "prediction", ["track_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        key = ", ".join(f"`{k}`" for k in UNIQUE)
        op.execute(
            "ALTER TABLE prediction DROP PRIMARY KEY, ADD COLUMN id INTEGER NOT NULL AUTO_INCREMENT FIRST, "
            f"ADD PRIMARY KEY (id), ADD CONSTRAINT uq_prediction_key UNIQUE ({key}), "
            f"DROP INDEX ix_prediction_track_id, ADD INDEX ix_prediction_week (week), {_modify('FLOAT')}"
        )
        return
    op.drop_index("ix_prediction_track_id", table_name="prediction")
    with op.batch_alter_table("prediction", recreate="always") as batch:
        batch.add_column(sa.Column("id", sa.Integer(), nullable=True))
    op.execute("UPDATE prediction SET id = rowid")
    with op.batch_alter_table("prediction", recreate="always") as batch:
        batch.drop_constraint("pk_prediction", type_="primary")
        batch.alter_column("id", existing_type=sa.Integer(), nullable=False)
        batch.create_primary_key("pk_prediction_id", ["id"])
        batch.create_unique_constraint("uq_prediction_key", UNIQUE)
        _retype(batch, sa.Double(), sa.Float())
    op.create_index("ix_prediction_week", "prediction", ["week"])

"""outbox.producer: the service that staged an event; each service publishes only its own (broker ACLs)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("producer", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    op.create_index("ix_outbox_producer", "outbox", ["producer"])
    # Events already staged: the producer is in their envelope.
    if op.get_bind().dialect.name == "mysql":
        op.execute("UPDATE outbox SET producer = JSON_UNQUOTE(JSON_EXTRACT(payload, '$.producer'))")
    else:
        op.execute("UPDATE outbox SET producer = json_extract(payload, '$.producer')")


def downgrade() -> None:
    op.drop_index("ix_outbox_producer", table_name="outbox")
    op.drop_column("outbox", "producer")

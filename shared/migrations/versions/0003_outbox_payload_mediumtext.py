"""outbox.payload as MEDIUMTEXT on MySQL: a week's predictions/latest message outgrows TEXT's 64 KB

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":  # SQLite's TEXT has no such limit
        op.alter_column(
            "outbox", "payload", existing_type=sa.Text(), type_=mysql.MEDIUMTEXT(), existing_nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column(
            "outbox", "payload", existing_type=mysql.MEDIUMTEXT(), type_=sa.Text(), existing_nullable=False
        )

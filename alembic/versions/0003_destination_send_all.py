"""destinations.send_all: a PACS gets every result; a modality only its own exams'

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("send_all", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_column("send_all")

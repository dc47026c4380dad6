"""destinations.outputs / cad_operating_point: which result objects a destination gets
(default: today's set) and the operating point its CAD SR marks are required above

Revision ID: 0004_destination_outputs
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # existing destinations keep what they received so far: TID 1500 reports, SC and SEG
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "outputs", sa.String(length=128), nullable=False, server_default="tid1500,sc,seg"
            )
        )
        # the operating point a CAD workstation's marks are required above ("" = bundle's first)
        batch_op.add_column(
            sa.Column(
                "cad_operating_point", sa.String(length=64), nullable=False, server_default=""
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_column("cad_operating_point")
        batch_op.drop_column("outputs")

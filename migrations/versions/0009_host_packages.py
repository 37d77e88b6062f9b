"""The packages a run changed on each host or, in a dry run, would change.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('host_results', sa.Column('packages', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('host_results', 'packages')

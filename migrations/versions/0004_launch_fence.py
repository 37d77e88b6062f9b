"""The launch fence: the right to launch a request is a lease with a token that changes on every take-over;
AWX jobs found beside the one kept for a request are recorded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('patch_requests', sa.Column('launch_token', sa.String(length=32), nullable=True))
    op.add_column('patch_requests', sa.Column('launch_lease_until', sa.DateTime(timezone=True), nullable=True))
    op.add_column('patch_requests', sa.Column('duplicate_awx_jobs', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('patch_requests', 'duplicate_awx_jobs')
    op.drop_column('patch_requests', 'launch_lease_until')
    op.drop_column('patch_requests', 'launch_token')

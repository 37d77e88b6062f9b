"""The follow schedule: when each running request is polled next, and when its playbook's stats arrived.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('patch_requests', sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('patch_requests', sa.Column('run_ended_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_patch_requests_next_poll_at'), 'patch_requests', ['next_poll_at'], unique=False)
    # Requests already running when this is applied are due at once.
    op.execute("UPDATE patch_requests SET next_poll_at = now() WHERE state = 'running'")


def downgrade() -> None:
    op.drop_index(op.f('ix_patch_requests_next_poll_at'), table_name='patch_requests')
    op.drop_column('patch_requests', 'run_ended_at')
    op.drop_column('patch_requests', 'next_poll_at')

"""Inventory snapshots synced from AWX (INVENTORY_SOURCE=awx), and the snapshot each proposal was validated
against.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'inventory_snapshots',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=500), nullable=False),
        sa.Column('hosts', sa.Integer(), nullable=False),
        sa.Column('groups', sa.Integer(), nullable=False),
        sa.Column('disabled_hosts', sa.Integer(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.Column('problems', sa.JSON(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_inventory_snapshots_ok'), 'inventory_snapshots', ['ok'], unique=False)
    op.add_column('patch_requests', sa.Column('inventory_snapshot_id', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column('patch_requests', 'inventory_snapshot_id')
    op.drop_index(op.f('ix_inventory_snapshots_ok'), table_name='inventory_snapshots')
    op.drop_table('inventory_snapshots')

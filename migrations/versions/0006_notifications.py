"""Outgoing notifications: the outbox of webhook messages (its dead letters stay in it as `dead`) and how far the
notifier has read the audit log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'notifications',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('audit_id', sa.BigInteger(), nullable=False),
        sa.Column('request_id', sa.String(length=32), nullable=True),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('target', sa.String(length=200), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('audit_id', 'target', name='uq_notifications_audit_target'),
    )
    op.create_index('ix_notifications_due', 'notifications', ['state', 'next_attempt_at'])
    op.create_index(op.f('ix_notifications_request_id'), 'notifications', ['request_id'])
    op.create_table(
        'notify_cursor',
        sa.Column('name', sa.String(length=50), nullable=False),
        sa.Column('last_audit_id', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('notify_cursor')
    op.drop_index(op.f('ix_notifications_request_id'), table_name='notifications')
    op.drop_index('ix_notifications_due', table_name='notifications')
    op.drop_table('notifications')

"""The audit log refuses TRUNCATE too; patchpilot's own user -> roles table (roles in proxy mode).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Row triggers never fire for TRUNCATE: a statement trigger refuses it (for every role, superusers included).
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();"
    )
    # Only the owner of the table may drop or disable its triggers: the application's own role must not own it
    # (`patchpilot up` runs migrations as the owner and the API and worker as a role that may only read and
    # append to audit_log; see patchpilot.embedded.grant_app_role).
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC")
    op.create_table(
        'user_roles',
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('roles', sa.JSON(), nullable=False),
        sa.Column('granted_by', sa.String(length=200), nullable=False),
        sa.Column('granted_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('user'),
    )


def downgrade() -> None:
    op.drop_table('user_roles')
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")

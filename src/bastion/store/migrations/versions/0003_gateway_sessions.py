"""Browser sessions of the gateway's login policy, in the database.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_sessions",
        sa.Column("key_hash", sa.String(length=71), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_index("ix_gateway_sessions_expires_at", "gateway_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_sessions_expires_at", table_name="gateway_sessions")
    op.drop_table("gateway_sessions")

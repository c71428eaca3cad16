"""run leases (one business date at a time for the daily run), message reviews, and one
message per debtor, channel and day

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reviewed_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
    contacted = sa.text("status IN ('sending', 'sent', 'unknown')")
    op.create_index(
        "uq_messages_contacted",
        "messages",
        ["as_of", "debtor_id", "channel"],
        unique=True,
        sqlite_where=contacted,
        postgresql_where=contacted,
    )


def downgrade() -> None:
    op.drop_index("uq_messages_contacted", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("reviewed_at")
        batch_op.drop_column("reviewed_by")
    op.drop_table("run_leases")

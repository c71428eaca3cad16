"""compliance decision records

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
        "contact_decisions",
        sa.Column("contact_key", sa.String(length=200), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.String(length=400), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("snapshot_ids", sa.String(length=400), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contact_key"),
    )
    with op.batch_alter_table("contact_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_decisions_as_of"), ["as_of"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_contact_decisions_debtor_id"), ["debtor_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_decisions_debtor_id"))
        batch_op.drop_index(batch_op.f("ix_contact_decisions_as_of"))
    op.drop_table("contact_decisions")

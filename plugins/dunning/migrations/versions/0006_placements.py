"""placements: placed accounts, agency files and payments

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agency_files",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    with op.batch_alter_table("agency_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agency_files_agency"), ["agency"], unique=False)
        batch_op.create_index(batch_op.f("ix_agency_files_as_of"), ["as_of"], unique=False)

    op.create_table(
        "agency_payments",
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("payment_ref", sa.String(length=128), nullable=False),
        sa.Column("account_ref", sa.String(length=96), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("commission_minor", sa.BigInteger(), nullable=False),
        sa.Column("remitted_minor", sa.BigInteger(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("agency", "payment_ref"),
    )
    with op.batch_alter_table("agency_payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agency_payments_account_ref"), ["account_ref"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agency_payments_debtor_id"), ["debtor_id"], unique=False
        )

    op.create_table(
        "placements",
        sa.Column("account_ref", sa.String(length=96), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=True),
        sa.Column("placed_on", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("principal_minor", sa.BigInteger(), nullable=False),
        sa.Column("interest_minor", sa.BigInteger(), nullable=False),
        sa.Column("fees_minor", sa.BigInteger(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("file_key", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("acknowledged_on", sa.Date(), nullable=True),
        sa.Column("collected_minor", sa.BigInteger(), nullable=False),
        sa.Column("commission_minor", sa.BigInteger(), nullable=False),
        sa.Column("ended_on", sa.Date(), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("recall_file_key", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("account_ref"),
    )
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_placements_agency"), ["agency"], unique=False)
        batch_op.create_index(batch_op.f("ix_placements_debtor_id"), ["debtor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_placements_placed_on"), ["placed_on"], unique=False)
        batch_op.create_index(batch_op.f("ix_placements_status"), ["status"], unique=False)
        batch_op.create_index(
            "uq_placements_active_debtor",
            ["debtor_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_placements_active_debtor",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index(batch_op.f("ix_placements_status"))
        batch_op.drop_index(batch_op.f("ix_placements_placed_on"))
        batch_op.drop_index(batch_op.f("ix_placements_debtor_id"))
        batch_op.drop_index(batch_op.f("ix_placements_agency"))

    op.drop_table("placements")
    with op.batch_alter_table("agency_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agency_payments_debtor_id"))
        batch_op.drop_index(batch_op.f("ix_agency_payments_account_ref"))

    op.drop_table("agency_payments")
    with op.batch_alter_table("agency_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agency_files_as_of"))
        batch_op.drop_index(batch_op.f("ix_agency_files_agency"))

    op.drop_table("agency_files")

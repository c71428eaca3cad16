"""payments: feed lines, allocations, exceptions, promises and plans, card declines

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("booked_on", sa.Date(), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_as_of"), ["as_of"], unique=False)
        batch_op.create_index(batch_op.f("ix_allocations_booked_on"), ["booked_on"], unique=False)
        batch_op.create_index(batch_op.f("ix_allocations_line_id"), ["line_id"], unique=False)

    op.create_table(
        "instalments",
        sa.Column("promise_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("paid_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("evaluated_as_of", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("promise_id", "seq"),
    )
    with op.batch_alter_table("instalments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instalments_debtor_id"), ["debtor_id"], unique=False)

    op.create_table(
        "payer_accounts",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=False),
        sa.Column("learned_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "payment_exceptions",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("line_id"),
    )
    with op.batch_alter_table("payment_exceptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_exceptions_as_of"), ["as_of"], unique=False)

    op.create_table(
        "payment_failures",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("charge_ref", sa.String(length=128), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=True),
        sa.Column("failed_on", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("network", sa.String(length=32), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("retry_on", sa.Date(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("line_id"),
    )
    with op.batch_alter_table("payment_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_failures_as_of"), ["as_of"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payment_failures_charge_ref"), ["charge_ref"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_failures_debtor_id"), ["debtor_id"], unique=False
        )

    op.create_table(
        "payment_lines",
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("feed", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("source_file", sa.String(length=512), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("booked_on", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payer_name", sa.String(length=256), nullable=True),
        sa.Column("payer_account", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("debtor_hint", sa.String(length=64), nullable=True),
        sa.Column("invoice_hint", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("original_id", sa.String(length=128), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("network", sa.String(length=32), nullable=True),
        sa.Column("network_code", sa.String(length=8), nullable=True),
        sa.Column("advice_code", sa.String(length=8), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("debtor_id", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("duplicate_of", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("line_id"),
    )
    with op.batch_alter_table("payment_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_lines_as_of"), ["as_of"], unique=False)
        batch_op.create_index(batch_op.f("ix_payment_lines_booked_on"), ["booked_on"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payment_lines_external_id"), ["external_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_lines_external_id"))
        batch_op.drop_index(batch_op.f("ix_payment_lines_booked_on"))
        batch_op.drop_index(batch_op.f("ix_payment_lines_as_of"))

    op.drop_table("payment_lines")
    with op.batch_alter_table("payment_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_failures_debtor_id"))
        batch_op.drop_index(batch_op.f("ix_payment_failures_charge_ref"))
        batch_op.drop_index(batch_op.f("ix_payment_failures_as_of"))

    op.drop_table("payment_failures")
    with op.batch_alter_table("payment_exceptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_exceptions_as_of"))

    op.drop_table("payment_exceptions")
    op.drop_table("payer_accounts")
    with op.batch_alter_table("instalments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instalments_debtor_id"))

    op.drop_table("instalments")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_line_id"))
        batch_op.drop_index(batch_op.f("ix_allocations_booked_on"))
        batch_op.drop_index(batch_op.f("ix_allocations_as_of"))

    op.drop_table("allocations")

"""decision versions: a decision a message was sent under is kept when the day is re-run

Revision ID: 0008
Revises: 0007
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _primary_key(columns: list[str]) -> None:
    """PostgreSQL names the key and alters it in place; SQLite rebuilds the table around it."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("contact_decisions_pkey", "contact_decisions", type_="primary")
        op.create_primary_key("contact_decisions_pkey", "contact_decisions", columns)
    else:
        # SQLAlchemy warns that the rebuilt table's key differs from the reflected one's: that
        # difference is the point of this migration.
        with (
            warnings.catch_warnings(),
            op.batch_alter_table("contact_decisions", recreate="always") as batch_op,
        ):
            warnings.filterwarnings("ignore", "Table '_alembic_tmp_contact_decisions'")
            batch_op.create_primary_key("contact_decisions_pkey", columns)


def upgrade() -> None:
    with op.batch_alter_table("contact_decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    _primary_key(["contact_key", "version"])


def downgrade() -> None:
    _primary_key(["contact_key"])
    with op.batch_alter_table("contact_decisions", schema=None) as batch_op:
        batch_op.drop_column("superseded_at")
        batch_op.drop_column("version")

"""Add package plans: QPS and quota on packages, overrides on keys.

Revision ID: 0002_basic_gate_plans
Revises: 0001_basic_gate
Create Date: 2026-12-01 00:00:00
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002_basic_gate_plans"
down_revision = "0001_basic_gate"
branch_labels = None
depends_on = None


def upgrade():
    # Every new column is nullable: existing packages and keys stay
    # unlimited, and no table is rewritten.
    with op.batch_alter_table("basic_gate_package") as batch:
        batch.add_column(sa.Column("qps", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("quota", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("quota_period", sa.String(length=8), nullable=True))
    with op.batch_alter_table("basic_gate_key") as batch:
        batch.add_column(sa.Column("qps", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("quota", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("qps_exempt", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("quota_exempt", sa.Boolean(), nullable=True))


def downgrade():
    # Batch mode, because SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("basic_gate_key") as batch:
        batch.drop_column("quota_exempt")
        batch.drop_column("qps_exempt")
        batch.drop_column("quota")
        batch.drop_column("qps")
    with op.batch_alter_table("basic_gate_package") as batch:
        batch.drop_column("quota_period")
        batch.drop_column("quota")
        batch.drop_column("qps")

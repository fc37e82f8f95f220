"""Add the usage table: the gate's decisions per key and UTC day.

Revision ID: 0003_basic_gate_usage
Revises: 0002_basic_gate_plans
Create Date: 2027-01-15 00:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "0003_basic_gate_usage"
down_revision = "0002_basic_gate_plans"
branch_labels = None
depends_on = None

# The errorCodes counted, one column each ("-" written "_").
CODES = (
    "authorization_required",
    "basic_authorization_required",
    "invalid_authorization",
    "invalid_credentials",
    "key_inactive",
    "gate_unavailable",
    "too_many_failures",
    "package_not_authorized",
    "rate_limit_exceeded",
    "quota_exceeded",
)


def key_string():
    # The same type as basic_gate_key.key: case-sensitive on MySQL and MariaDB.
    binary = mysql.VARCHAR(length=255, charset="utf8mb4", collation="utf8mb4_bin")
    return sa.String(length=255).with_variant(binary, "mysql", "mariadb")


def count(name):
    return sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)


def upgrade():
    # A new table only: no existing row is touched. No foreign key to
    # basic_gate_key: a deleted key's usage stays, and the row of requests
    # naming no known key has an empty key.
    op.create_table(
        "basic_gate_usage",
        sa.Column("key", key_string(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("package", sa.String(length=255), nullable=True),
        count("allowed"),
        count("blocked"),
        count("other"),
        *(count(name) for name in CODES),
        sa.PrimaryKeyConstraint("key", "day"),
    )
    op.create_index(op.f("ix_basic_gate_usage_day"), "basic_gate_usage", ["day"], unique=False)


def downgrade():
    op.drop_table("basic_gate_usage")

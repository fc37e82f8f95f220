"""Create the flask-basic-gate tables.

Revision ID: 0001_basic_gate
Revises:
Create Date: 2025-01-01 00:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "0001_basic_gate"
down_revision = None  # or the revision of your app's previous migration
branch_labels = None
depends_on = None


def key_string():
    # Keys and package names compare case-sensitively everywhere: MySQL and
    # MariaDB need the binary collation for that.
    binary = mysql.VARCHAR(length=255, charset="utf8mb4", collation="utf8mb4_bin")
    return sa.String(length=255).with_variant(binary, "mysql", "mariadb")


def upgrade():
    op.create_table(
        "basic_gate_package",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", key_string(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "basic_gate_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", key_string(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("owner_name", sa.String(length=255), nullable=True),
        sa.Column("owner_email", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("package_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["package_id"], ["basic_gate_package.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(
        op.f("ix_basic_gate_key_package_id"), "basic_gate_key", ["package_id"], unique=False
    )
    op.create_table(
        "basic_gate_secret",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["basic_gate_key.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_basic_gate_secret_key_id"), "basic_gate_secret", ["key_id"], unique=False
    )


def downgrade():
    # Dropping a table drops its indexes; dropping the index first fails on
    # MySQL and MariaDB, which need it for the foreign key.
    op.drop_table("basic_gate_secret")
    op.drop_table("basic_gate_key")
    op.drop_table("basic_gate_package")

"""memory: each node's memory as its workers report it, and a job's optional memory limit per process

A submission whose estimated memory exceeds the largest node's is refused; nodes recorded before report theirs at
the daemon's next sync (NULL until then: nothing is refused for want of it). Jobs stored before have no limit.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('memory_bytes', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('memory_limit_gib', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('memory_limit_gib')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('memory_bytes')

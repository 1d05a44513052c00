"""run nodes: a gang's per-node breakdown kept with each of its runs

A gang's controller reports each node's ranks, energy, samples and end with every run's end; until now only a
succeeded run kept it (in its job's result). Runs stored before have none (NULL): a succeeded gang's breakdown
is still in its job's result.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nodes', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('nodes')

"""job launch: a job's gang shape (GPUs per node, per-gpu or per-node processes) and its stop signal and grace

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs stored before ran one process on one node and were stopped with SIGTERM: the defaults say so.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpus_per_node', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('launch', sa.String(length=16), nullable=False, server_default='per-gpu'))
        batch_op.add_column(sa.Column('stop_signal', sa.String(length=16), nullable=False,
                                      server_default='SIGTERM'))
        batch_op.add_column(sa.Column('grace_s', sa.Float(), nullable=False, server_default=sa.text('120')))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('grace_s')
        batch_op.drop_column('stop_signal')
        batch_op.drop_column('launch')
        batch_op.drop_column('gpus_per_node')

"""job wait status: the policy's status code and the plugin that decided why a waiting job waits

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Jobs recorded before kept only the reason: their code and plugin are unknown (NULL) until the next tick.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('wait_code', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('wait_plugin', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('wait_plugin')
        batch_op.drop_column('wait_code')

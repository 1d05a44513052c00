"""run cap step: the speed and power fraction a run's power cap gave it, for its full-power counterfactual

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Runs recorded before kept no cap step: they count as full power, as the counterfactual then assumed.
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cap_speed', sa.Float(), nullable=False, server_default=sa.text('1')))
        batch_op.add_column(sa.Column('cap_power_fraction', sa.Float(), nullable=False,
                                      server_default=sa.text('1')))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('cap_power_fraction')
        batch_op.drop_column('cap_speed')

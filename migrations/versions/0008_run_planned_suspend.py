"""run planned suspension: when the policy planned to suspend a running interruptible job

The daemon's timers live in its memory; a daemon that starts leading (after a restart, or a standby taking over)
arms them again from the database: a time limit from the job's limit and its runs' times, a planned suspension
from this column. Runs stored before it have no plan (NULL): such a run keeps running until the policy decides
again, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('planned_suspend_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('planned_suspend_at')

"""run power cap mode: how each run's power cap was applied (applied, dry-run, simulated) and the limit in force

A run's fifo counterfactual credits its cap only when the cap was in force. Runs recorded before this kept no
mode: those whose energy came from the simulated meter had their cap applied there (the meter clipped at it), so
they are marked ``simulated``; the others stay unknown (NULL), and where their counterfactual credited a cap
(a cap step below full power) it is cleared, since the cap may have been a dry run: their saving shows as
unknown rather than as one that may not have happened. Downgrading keeps the cleared counterfactuals cleared.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('power_cap_mode', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('power_cap_limit_w', sa.Float(), nullable=True))
    op.execute(
        "UPDATE runs SET power_cap_mode = 'simulated', power_cap_limit_w = power_cap_w "
        "WHERE power_cap_w IS NOT NULL AND id IN (SELECT run_id FROM run_energy WHERE gpu_method = 'simulated')")
    op.execute(
        "UPDATE run_energy SET counterfactual_emissions_g = NULL WHERE run_id IN (SELECT id FROM runs "
        "WHERE power_cap_mode IS NULL AND (cap_speed <> 1 OR cap_power_fraction <> 1))")


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('power_cap_limit_w')
        batch_op.drop_column('power_cap_mode')

"""sharing and history: job hold, begin time, time limit, dependencies, idempotency keys; counterfactual emissions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a constraint to an existing table, so Alembic copies it.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('time_limit_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('held', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('depends_on', sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_jobs_user_id_idempotency_key', ['user_id', 'idempotency_key'])
        batch_op.create_index(batch_op.f('ix_jobs_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('run_energy', schema=None) as batch_op:
        batch_op.add_column(sa.Column('counterfactual_emissions_g', sa.Float(), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_zone'), ['zone'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_zone'))

    with op.batch_alter_table('run_energy', schema=None) as batch_op:
        batch_op.drop_column('counterfactual_emissions_g')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_user_id'))
        batch_op.drop_constraint('uq_jobs_user_id_idempotency_key', type_='unique')
        batch_op.drop_column('request_hash')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('depends_on')
        batch_op.drop_column('held')
        batch_op.drop_column('time_limit_s')
        batch_op.drop_column('not_before_at')

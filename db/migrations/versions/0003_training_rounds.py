"""training rounds and their stages, loop settings, registry events, simulated raters (the unused training_run goes)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 21:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROUND_STATUS = ('requested', 'running', 'succeeded', 'skipped', 'failed', 'cancelled')
STAGE_STATUS = ('running', 'done', 'skipped', 'failed')


def upgrade() -> None:
    op.drop_table('training_run')
    op.create_table('training_round',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum(*ROUND_STATUS, name='roundstatus', native_enum=False, length=24), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('snapshot', sa.JSON(), nullable=True),
    sa.Column('decision', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_round')),
    sa.UniqueConstraint('number', name=op.f('uq_training_round_number'))
    )
    op.create_index('uq_training_round_one_running', 'training_round', ['status'], unique=True,
                    sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
    op.create_table('round_stage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum(*STAGE_STATUS, name='stagestatus', native_enum=False, length=24), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('log', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['round_id'], ['training_round.id'], name=op.f('fk_round_stage_round_id_training_round'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_round_stage')),
    sa.UniqueConstraint('round_id', 'name', name=op.f('uq_round_stage_round_id'))
    )
    op.create_table('registry_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('previous_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_version.id'], name=op.f('fk_registry_event_model_version_id_model_version')),
    sa.ForeignKeyConstraint(['previous_id'], ['model_version.id'], name=op.f('fk_registry_event_previous_id_model_version')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registry_event'))
    )
    op.create_table('loop_setting',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('updated_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_loop_setting'))
    )
    with op.batch_alter_table('rater') as batch:
        batch.add_column(sa.Column('simulated', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('rater') as batch:
        batch.alter_column('simulated', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('rater') as batch:
        batch.drop_column('simulated')
    op.drop_table('loop_setting')
    op.drop_table('registry_event')
    op.drop_table('round_stage')
    op.drop_index('uq_training_round_one_running', table_name='training_round')
    op.drop_table('training_round')
    op.create_table('training_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'interrupted', name='runstatus', native_enum=False, length=24), nullable=False),
    sa.Column('config', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('log', sa.Text(), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_version.id'], name=op.f('fk_training_run_model_version_id_model_version')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_run'))
    )

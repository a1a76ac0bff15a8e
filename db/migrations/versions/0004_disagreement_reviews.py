"""disagreement reviews: tasks where a judge confidently contradicts the humans' majority

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 21:30:17

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('disagreement_review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('judge', sa.String(length=128), nullable=False),
    sa.Column('human_choice_id', sa.Integer(), nullable=False),
    sa.Column('judge_choice_id', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=False),
    sa.Column('votes', sa.JSON(), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('raters', sa.JSON(), nullable=False),
    sa.Column('verdict', sa.Enum('open', 'humans_right', 'judge_right', 'unclear', name='reviewverdict', native_enum=False, length=24), nullable=False),
    sa.Column('decided_by', sa.String(length=128), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['human_choice_id'], ['candidate.id'], name=op.f('fk_disagreement_review_human_choice_id_candidate')),
    sa.ForeignKeyConstraint(['judge_choice_id'], ['candidate.id'], name=op.f('fk_disagreement_review_judge_choice_id_candidate')),
    sa.ForeignKeyConstraint(['task_id'], ['comparison_task.id'], name=op.f('fk_disagreement_review_task_id_comparison_task'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disagreement_review')),
    sa.UniqueConstraint('task_id', 'judge', name=op.f('uq_disagreement_review_task_id'))
    )


def downgrade() -> None:
    op.drop_table('disagreement_review')

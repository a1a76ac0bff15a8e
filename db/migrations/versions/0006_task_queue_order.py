"""the queue's index in the queue's order (priority DESC, judgement_count, id), so the next-task
query reads a window of tasks instead of sorting every open one

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 03:58:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('comparison_task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_queue')
        batch_op.create_index('ix_task_queue', [sa.text('priority DESC'), 'judgement_count', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('comparison_task', schema=None) as batch_op:
        batch_op.drop_index('ix_task_queue')
        batch_op.create_index('ix_task_queue', ['priority', 'judgement_count'], unique=False)

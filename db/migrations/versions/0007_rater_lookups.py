"""indexes for what each next_task looks up by rater: the rater's live lease and finished
assignments (assignment by rater and status) and their judgements today (judgement by rater and
time), which otherwise scan every assignment and judgement ever made

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 07:30:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_assignment_rater_status', 'assignment', ['rater_id', 'status'])
    op.create_index('ix_judgement_rater_created', 'judgement', ['rater_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_judgement_rater_created', table_name='judgement')
    op.drop_index('ix_assignment_rater_status', table_name='assignment')

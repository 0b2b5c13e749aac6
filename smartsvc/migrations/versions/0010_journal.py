"""journal: the channel of each interaction, and an index for the effort metrics

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# The channels of the kinds recorded before this revision (the rest came through the API).
_EXISTING = {"suggestion.created": "inbox", "suggestion.pushed": "push", "help.answered": "agent",
             "help.closed": "agent"}


def upgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=16), server_default='api', nullable=False))
        batch_op.create_index('ix_interactions_subject_id', ['subject_id'], unique=False)
    for kind, channel in _EXISTING.items():
        op.execute(sa.text("UPDATE interactions SET channel = :channel WHERE kind = :kind")
                   .bindparams(channel=channel, kind=kind))


def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_interactions_subject_id')
        batch_op.drop_column('channel')

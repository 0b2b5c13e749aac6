"""push retries: one push_attempts row per try (try number, HTTP status, when the next try is due)

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    with op.batch_alter_table('push_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('try_number', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch_op.add_column(sa.Column('status_code', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('retry_at', utc, nullable=True))
        batch_op.drop_constraint('uq_push_attempts_suggestion_device_round', type_='unique')
        batch_op.create_unique_constraint('uq_push_attempts_suggestion_device_round_try',
                                          ['suggestion_id', 'device_id', 'round', 'try_number'])


def downgrade() -> None:
    # Only the last try of each device and round survives the old one-row-per-round shape.
    op.execute(sa.text(
        "DELETE FROM push_attempts WHERE try_number < "
        "(SELECT MAX(later.try_number) FROM push_attempts later "
        "WHERE later.suggestion_id = push_attempts.suggestion_id AND later.device_id = push_attempts.device_id "
        "AND later.round = push_attempts.round)"))
    with op.batch_alter_table('push_attempts', schema=None) as batch_op:
        batch_op.drop_constraint('uq_push_attempts_suggestion_device_round_try', type_='unique')
        batch_op.create_unique_constraint('uq_push_attempts_suggestion_device_round',
                                          ['suggestion_id', 'device_id', 'round'])
        batch_op.drop_column('retry_at')
        batch_op.drop_column('status_code')
        batch_op.drop_column('try_number')

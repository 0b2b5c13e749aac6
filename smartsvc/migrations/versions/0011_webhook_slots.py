"""webhook slots: deliveries waiting for one of their endpoint's in-flight sends to finish, or for it to recover

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_since', smartsvc.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_webhook_deliveries_webhook_id_sending_since', ['webhook_id', 'sending_since'],
                              unique=False)
        batch_op.create_index('ix_webhook_deliveries_webhook_id_waiting_since', ['webhook_id', 'waiting_since'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_webhook_id_waiting_since')
        batch_op.drop_index('ix_webhook_deliveries_webhook_id_sending_since')
        batch_op.drop_column('waiting_since')
    with op.batch_alter_table('webhooks', schema=None) as batch_op:
        batch_op.drop_column('consecutive_failures')

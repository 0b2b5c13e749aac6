"""webhooks: partner endpoints, deliveries, attempts, notices, and the sharing ledger

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('webhooks',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('event_types', json, nullable=False),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=500), nullable=True),
    sa.Column('disabled_at', utc, nullable=True),
    sa.Column('coordinate_decimals', sa.Integer(), nullable=False),
    sa.Column('secret_encrypted', sa.Text(), nullable=False),
    sa.Column('previous_secret_encrypted', sa.Text(), nullable=True),
    sa.Column('previous_secret_expires_at', utc, nullable=True),
    sa.Column('failing_since', utc, nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('updated_at', utc, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks'))
    )
    op.create_index('ix_webhooks_owner_id', 'webhooks', ['owner', 'id'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('webhook_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('payload', json, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', utc, nullable=True),
    sa.Column('sending_since', utc, nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=2000), nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('delivered_at', utc, nullable=True),
    sa.Column('updated_at', utc, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webhook_deliveries_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index('ix_webhook_deliveries_webhook_id_id', 'webhook_deliveries', ['webhook_id', 'id'], unique=False)
    op.create_index('ix_webhook_deliveries_webhook_id_subject_status', 'webhook_deliveries',
                    ['webhook_id', 'subject', 'status'], unique=False)
    op.create_index('ix_webhook_deliveries_user_id_status', 'webhook_deliveries', ['user_id', 'status'], unique=False)
    op.create_table('webhook_attempts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('delivery_id', sa.Uuid(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=2000), nullable=True),
    sa.Column('started_at', utc, nullable=False),
    sa.Column('finished_at', utc, nullable=True),
    sa.Column('next_retry_at', utc, nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts'))
    )
    op.create_index('ix_webhook_attempts_delivery_id_number', 'webhook_attempts', ['delivery_id', 'number'], unique=False)
    op.create_table('webhook_notices',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('webhook_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('message', sa.String(length=1000), nullable=False),
    sa.Column('at', utc, nullable=False),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_notices_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_notices'))
    )
    op.create_index('ix_webhook_notices_webhook_id_id', 'webhook_notices', ['webhook_id', 'id'], unique=False)
    op.create_table('sharing_ledger',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('at', utc, nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.String(length=300), nullable=False),
    sa.Column('recipient_id', sa.String(length=100), nullable=True),
    sa.Column('recipient_owner', sa.String(length=100), nullable=True),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('fields', json, nullable=False),
    sa.Column('reference_id', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sharing_ledger_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sharing_ledger'))
    )
    op.create_index('ix_sharing_ledger_user_id_id', 'sharing_ledger', ['user_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_sharing_ledger_user_id_id', table_name='sharing_ledger')
    op.drop_table('sharing_ledger')
    op.drop_index('ix_webhook_notices_webhook_id_id', table_name='webhook_notices')
    op.drop_table('webhook_notices')
    op.drop_index('ix_webhook_attempts_delivery_id_number', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    for name in ('ix_webhook_deliveries_user_id_status', 'ix_webhook_deliveries_webhook_id_subject_status',
                 'ix_webhook_deliveries_webhook_id_id'):
        op.drop_index(name, table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhooks_owner_id', table_name='webhooks')
    op.drop_table('webhooks')

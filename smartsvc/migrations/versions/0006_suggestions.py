"""suggestions: suggestions, push attempts, interactions

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('suggestions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=True),
    sa.Column('trigger_id', sa.Uuid(), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('payload', json, nullable=False),
    sa.Column('reason', json, nullable=False),
    sa.Column('collapse_key', sa.String(length=200), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('expires_at', utc, nullable=False),
    sa.Column('deliver_after', utc, nullable=True),
    sa.Column('snoozed_until', utc, nullable=True),
    sa.Column('delivery_status', sa.String(length=16), nullable=False),
    sa.Column('delivered_at', utc, nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('pushed_at', utc, nullable=True),
    sa.Column('push_round', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], name=op.f('fk_suggestions_rule_id_rules'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_suggestions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suggestions')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_suggestions_dedupe_key'))
    )
    op.create_index('ix_suggestions_rule_id', 'suggestions', ['rule_id'], unique=False)
    op.create_index('ix_suggestions_user_id_id', 'suggestions', ['user_id', 'id'], unique=False)
    op.create_index('ix_suggestions_user_id_pushed_at', 'suggestions', ['user_id', 'pushed_at'], unique=False)
    op.create_index('ix_suggestions_user_id_content_hash', 'suggestions', ['user_id', 'content_hash'], unique=False)
    op.create_index('ix_suggestions_user_id_collapse_key', 'suggestions', ['user_id', 'collapse_key'], unique=False)
    op.create_index('ix_suggestions_status_deliver_after', 'suggestions', ['status', 'deliver_after'], unique=False)
    op.create_index('ix_suggestions_status_snoozed_until', 'suggestions', ['status', 'snoozed_until'], unique=False)
    op.create_index('ix_suggestions_status_expires_at', 'suggestions', ['status', 'expires_at'], unique=False)
    op.create_table('push_attempts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('suggestion_id', sa.Uuid(), nullable=False),
    sa.Column('device_id', sa.Uuid(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.String(length=2000), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('started_at', utc, nullable=False),
    sa.Column('finished_at', utc, nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_push_attempts_device_id_devices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['suggestion_id'], ['suggestions.id'], name=op.f('fk_push_attempts_suggestion_id_suggestions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_push_attempts')),
    sa.UniqueConstraint('suggestion_id', 'device_id', 'round', name='uq_push_attempts_suggestion_device_round')
    )
    op.create_index('ix_push_attempts_device_id', 'push_attempts', ['device_id'], unique=False)
    op.create_table('interactions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('subject_type', sa.String(length=32), nullable=True),
    sa.Column('subject_id', sa.Uuid(), nullable=True),
    sa.Column('data', json, nullable=False),
    sa.Column('at', utc, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_interactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interactions'))
    )
    op.create_index('ix_interactions_user_id_id', 'interactions', ['user_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_interactions_user_id_id', table_name='interactions')
    op.drop_table('interactions')
    op.drop_index('ix_push_attempts_device_id', table_name='push_attempts')
    op.drop_table('push_attempts')
    for name in ('ix_suggestions_status_expires_at', 'ix_suggestions_status_snoozed_until',
                 'ix_suggestions_status_deliver_after', 'ix_suggestions_user_id_collapse_key',
                 'ix_suggestions_user_id_content_hash', 'ix_suggestions_user_id_pushed_at',
                 'ix_suggestions_user_id_id', 'ix_suggestions_rule_id'):
        op.drop_index(name, table_name='suggestions')
    op.drop_table('suggestions')

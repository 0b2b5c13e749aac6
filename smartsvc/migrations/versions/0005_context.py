"""context: users' context events, their derived context, and the triggers the engine runs rules on

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('context_events',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('at', utc, nullable=False),
    sa.Column('data', json, nullable=False),
    sa.Column('received_at', utc, nullable=False),
    sa.Column('late', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_context_events_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_context_events')),
    sa.UniqueConstraint('user_id', 'type', 'at', name='uq_context_events_user_type_at')
    )
    op.create_table('user_contexts',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('last_at', utc, nullable=True),
    sa.Column('fix', json, nullable=True),
    sa.Column('speed_mps', sa.Float(), nullable=True),
    sa.Column('activity', json, nullable=True),
    sa.Column('app', json, nullable=True),
    sa.Column('trip', json, nullable=True),
    sa.Column('geofence_due_at', utc, nullable=True),
    sa.Column('updated_at', utc, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_contexts_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_contexts'))
    )
    op.create_index('ix_user_contexts_geofence_due_at', 'user_contexts', ['geofence_due_at'], unique=False)
    op.create_table('triggers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=True),
    sa.Column('product_id', sa.Uuid(), nullable=True),
    sa.Column('fields', json, nullable=False),
    sa.Column('at', utc, nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('processed_at', utc, nullable=True),
    sa.ForeignKeyConstraint(['product_id'], ['owned_products.id'], name=op.f('fk_triggers_product_id_owned_products'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], name=op.f('fk_triggers_rule_id_rules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_triggers_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_triggers')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_triggers_dedupe_key'))
    )
    op.create_index('ix_triggers_user_id_at', 'triggers', ['user_id', 'at'], unique=False)
    # The scheduler finds a time zone's users through it (schedule rules fire per local time).
    op.create_index('ix_users_time_zone', 'users', ['time_zone'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_users_time_zone', table_name='users')
    op.drop_index('ix_triggers_user_id_at', table_name='triggers')
    op.drop_table('triggers')
    op.drop_index('ix_user_contexts_geofence_due_at', table_name='user_contexts')
    op.drop_table('user_contexts')
    op.drop_table('context_events')

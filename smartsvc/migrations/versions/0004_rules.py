"""rules: operator rules, a version counter, per-user rule scores

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('rules',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('trigger_event', sa.String(length=40), nullable=False),
    sa.Column('trigger', json, nullable=False),
    sa.Column('conditions', json, nullable=False),
    sa.Column('action', json, nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('cooldown_s', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('updated_at', utc, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rules'))
    )
    op.create_index('ix_rules_trigger_event_id', 'rules', ['trigger_event', 'id'], unique=False)
    versions = op.create_table('rule_versions',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', utc, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_versions'))
    )
    # The one counter row, so that writers only ever update it.
    op.bulk_insert(versions, [{'id': 1, 'version': 0, 'changed_at': None}])
    op.create_table('user_rule_scores',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('rule_id', sa.Uuid(), nullable=False),
    sa.Column('score', sa.Float(), server_default=sa.text('1.0'), nullable=False),
    sa.Column('dismissals', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('muted_at', utc, nullable=True),
    sa.Column('updated_at', utc, nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], name=op.f('fk_user_rule_scores_rule_id_rules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_rule_scores_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'rule_id', name=op.f('pk_user_rule_scores'))
    )
    op.create_index('ix_user_rule_scores_rule_id', 'user_rule_scores', ['rule_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_user_rule_scores_rule_id', table_name='user_rule_scores')
    op.drop_table('user_rule_scores')
    op.drop_table('rule_versions')
    op.drop_index('ix_rules_trigger_event_id', table_name='rules')
    op.drop_table('rules')

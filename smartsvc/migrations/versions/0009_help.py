"""help: help cases with their context snapshot, and their messages

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('help_cases',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=100), nullable=True),
    sa.Column('screen', sa.String(length=200), nullable=True),
    sa.Column('product_id', sa.Uuid(), nullable=True),
    sa.Column('snapshot', json, nullable=False),
    sa.Column('message_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('updated_at', utc, nullable=False),
    sa.Column('user_active_at', utc, nullable=False),
    sa.Column('first_answered_at', utc, nullable=True),
    sa.Column('closed_at', utc, nullable=True),
    sa.Column('messages_until_solved', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['product_id'], ['owned_products.id'],
                            name=op.f('fk_help_cases_product_id_owned_products'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_help_cases_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_help_cases'))
    )
    op.create_index('ix_help_cases_user_id_id', 'help_cases', ['user_id', 'id'], unique=False)
    op.create_index('ix_help_cases_status_id', 'help_cases', ['status', 'id'], unique=False)
    op.create_table('help_messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('author', sa.String(length=16), nullable=False),
    sa.Column('agent_key_id', sa.Uuid(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('guidance', json, nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['help_cases.id'], name=op.f('fk_help_messages_case_id_help_cases'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_help_messages_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_help_messages'))
    )
    op.create_index('ix_help_messages_case_id_id', 'help_messages', ['case_id', 'id'], unique=False)
    op.create_index('ix_help_messages_user_id', 'help_messages', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_help_messages_user_id', table_name='help_messages')
    op.drop_index('ix_help_messages_case_id_id', table_name='help_messages')
    op.drop_table('help_messages')
    op.drop_index('ix_help_cases_status_id', table_name='help_cases')
    op.drop_index('ix_help_cases_user_id_id', table_name='help_cases')
    op.drop_table('help_cases')

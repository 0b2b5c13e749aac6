"""geofences: operator geofences, a version counter, per-user geofence state

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('geofences',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('tag', sa.String(length=100), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('geometry', json, nullable=False),
    sa.Column('radius_m', sa.Float(), nullable=True),
    sa.Column('vertices', sa.Integer(), nullable=False),
    sa.Column('metadata', json, nullable=False),
    sa.Column('schedule', sa.Text(), nullable=True),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('dwell_s', sa.Integer(), nullable=True),
    sa.Column('hysteresis_m', sa.Float(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('notes', json, nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('updated_at', utc, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_geofences'))
    )
    op.create_index('ix_geofences_tag_id', 'geofences', ['tag', 'id'], unique=False)
    versions = op.create_table('geofence_versions',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', utc, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_geofence_versions'))
    )
    # The one counter row, so that writers only ever update it.
    op.bulk_insert(versions, [{'id': 1, 'version': 0, 'changed_at': None}])
    op.create_table('user_geofence_states',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('state', json, nullable=False),
    sa.Column('updated_at', utc, nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_geofence_states_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_geofence_states'))
    )


def downgrade() -> None:
    op.drop_table('user_geofence_states')
    op.drop_table('geofence_versions')
    op.drop_index('ix_geofences_tag_id', table_name='geofences')
    op.drop_table('geofences')

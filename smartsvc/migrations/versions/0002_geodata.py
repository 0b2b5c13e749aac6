"""geodata: datasets, layer features (with a PostGIS geography column), live layers

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
import smartsvc.models.base

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    utc = smartsvc.models.base.UTCDateTime(timezone=True)
    op.create_table('datasets',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('layer', sa.String(length=20), nullable=False),
    sa.Column('format', sa.String(length=20), nullable=True),
    sa.Column('time_zone', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('file_name', sa.String(length=300), nullable=True),
    sa.Column('file_size', sa.BigInteger(), nullable=False),
    sa.Column('upload_path', sa.Text(), nullable=True),
    sa.Column('progress_done', sa.BigInteger(), nullable=False),
    sa.Column('progress_total', sa.BigInteger(), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('repaired', sa.Integer(), nullable=False),
    sa.Column('spots', sa.Integer(), nullable=False),
    sa.Column('import_attempts', sa.Integer(), nullable=False),
    sa.Column('errors', json, nullable=False),
    sa.Column('errors_total', sa.Integer(), nullable=False),
    sa.Column('failure', sa.Text(), nullable=True),
    sa.Column('file_metadata', json, nullable=False),
    sa.Column('bbox_min_lon', sa.Float(), nullable=True),
    sa.Column('bbox_min_lat', sa.Float(), nullable=True),
    sa.Column('bbox_max_lon', sa.Float(), nullable=True),
    sa.Column('bbox_max_lat', sa.Float(), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', utc, nullable=False),
    sa.Column('started_at', utc, nullable=True),
    sa.Column('finished_at', utc, nullable=True),
    sa.Column('published_at', utc, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets'))
    )
    op.create_index('ix_datasets_layer_created', 'datasets', ['layer', 'created_at'], unique=False)
    op.create_table('layer_features',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('feature_id', sa.String(length=300), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=True),
    sa.Column('geometry', json, nullable=False),
    sa.Column('properties', json, nullable=False),
    sa.Column('min_lon', sa.Float(), nullable=False),
    sa.Column('min_lat', sa.Float(), nullable=False),
    sa.Column('max_lon', sa.Float(), nullable=False),
    sa.Column('max_lat', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_layer_features_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_layer_features'))
    )
    op.create_index('ix_layer_features_dataset_seq', 'layer_features', ['dataset_id', 'seq'], unique=True)
    op.create_index('ix_layer_features_dataset_bbox', 'layer_features', ['dataset_id', 'min_lon', 'min_lat'], unique=False)
    op.create_table('live_layers',
    sa.Column('layer', sa.String(length=20), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=True),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('published_at', utc, nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_live_layers_dataset_id_datasets'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('layer', name=op.f('pk_live_layers'))
    )
    if op.get_bind().dialect.name == "postgresql":
        # Geodesic radius and KNN queries (ST_DWithin, <->) on a GiST index; the
        # ORM does not map this column, the importer fills it from `geometry`.
        op.execute("ALTER TABLE layer_features ADD COLUMN geog geography(Geometry, 4326)")
        op.execute("CREATE INDEX ix_layer_features_geog ON layer_features USING gist (geog)")


def downgrade() -> None:
    op.drop_table('live_layers')
    op.drop_index('ix_layer_features_dataset_bbox', table_name='layer_features')
    op.drop_index('ix_layer_features_dataset_seq', table_name='layer_features')
    op.drop_table('layer_features')
    op.drop_index('ix_datasets_layer_created', table_name='datasets')
    op.drop_table('datasets')

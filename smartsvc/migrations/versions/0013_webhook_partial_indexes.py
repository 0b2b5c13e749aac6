"""webhook slot indexes hold only the rows in flight or waiting (partial): every write of a delivery skipped them

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_INDEXES = (("ix_webhook_deliveries_webhook_id_sending_since", "sending_since"),
            ("ix_webhook_deliveries_webhook_id_waiting_since", "waiting_since"))


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        for name, column in _INDEXES:
            batch_op.drop_index(name)
            where = sa.text(f"{column} IS NOT NULL")
            batch_op.create_index(name, ['webhook_id', column], unique=False, postgresql_where=where,
                                  sqlite_where=where)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        for name, column in _INDEXES:
            batch_op.drop_index(name)
            batch_op.create_index(name, ['webhook_id', column], unique=False)

"""node ownership: which node holds a sandbox, a snapshot, a running build (scale-out, issue 17)

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('sandboxes', 'snapshots', 'builds'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('node_id', sa.String(length=128), nullable=True))
            batch.create_index(f'ix_{table}_node_id', ['node_id'])


def downgrade() -> None:
    for table in ('sandboxes', 'snapshots', 'builds'):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f'ix_{table}_node_id')
            batch.drop_column('node_id')

"""snapshot images: the blob a snapshot was published as, so any node can start it (issue 17)

Revision ID: 0024
Revises: 0022
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0024'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('snapshots') as batch:
        batch.add_column(sa.Column('image', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('snapshots') as batch:
        batch.drop_column('image')

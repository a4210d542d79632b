"""builds.layer_blobs, sandboxes.pause_image: blob-store digests so other nodes find layers and pause images (issue 17)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('builds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('layer_blobs', sa.JSON(), nullable=True))
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_image', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('pause_image')
    with op.batch_alter_table('builds', schema=None) as batch_op:
        batch_op.drop_column('layer_blobs')

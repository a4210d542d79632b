"""sandboxes.pause_hot: a paused sandbox whose memory is still live (frozen container, no CRIU image yet)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_hot', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('pause_hot')

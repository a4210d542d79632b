"""volumes.kind, prime_volume_id, head_id, sandbox_id: Prime's volumes (heads, versions, private copies)

Revision ID: 0020
Revises: 0014
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='e2b'))
        batch_op.add_column(sa.Column('prime_volume_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('head_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('sandbox_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_column('sandbox_id')
        batch_op.drop_column('head_id')
        batch_op.drop_column('prime_volume_id')
        batch_op.drop_column('kind')

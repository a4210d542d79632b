"""snapshots.allow_internet_access, snapshots.network: clones keep the source's network policy

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Snapshots taken before this revision get their source sandbox's policy when that sandbox
still exists (otherwise they stay without one, as before).
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allow_internet_access', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('network', sa.JSON(), nullable=True))
    op.execute(
        "UPDATE snapshots SET "
        "allow_internet_access = (SELECT s.allow_internet_access FROM sandboxes s WHERE s.id = snapshots.source_sandbox_id), "
        "network = (SELECT s.network FROM sandboxes s WHERE s.id = snapshots.source_sandbox_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_column('network')
        batch_op.drop_column('allow_internet_access')

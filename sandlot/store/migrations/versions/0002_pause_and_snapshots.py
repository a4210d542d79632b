"""pause/resume columns and snapshots

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auto_resume', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('pause_memory', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('snapshots',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('source_sandbox_id', sa.String(length=64), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('alias', sa.String(length=255), nullable=True),
    sa.Column('cpu_count', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_mb', sa.Integer(), nullable=False),
    sa.Column('envd_version', sa.String(length=32), nullable=False),
    sa.Column('envd_access_token', sa.String(length=128), nullable=False),
    sa.Column('env_vars', sa.JSON(), nullable=False),
    sa.Column('memory', sa.Boolean(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_team_id'), ['team_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_source_sandbox_id'), ['source_sandbox_id'], unique=False)


def downgrade() -> None:
    op.drop_table('snapshots')
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_column('paused_at')
        batch_op.drop_column('pause_memory')
        batch_op.drop_column('auto_resume')

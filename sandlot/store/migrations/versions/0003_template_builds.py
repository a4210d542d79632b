"""template builds: build config, tags, build logs

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('builds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env_vars', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('default_user', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('default_workdir', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('reason_step', sa.String(length=32), nullable=True))
    op.create_table('build_log_entries',
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['build_id'], ['builds.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('build_id', 'seq')
    )
    op.create_table('template_tags',
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['build_id'], ['builds.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('template_id', 'tag')
    )


def downgrade() -> None:
    op.drop_table('template_tags')
    op.drop_table('build_log_entries')
    with op.batch_alter_table('builds', schema=None) as batch_op:
        for name in ('reason_step', 'tags', 'default_workdir', 'default_user', 'env_vars'):
            batch_op.drop_column(name)

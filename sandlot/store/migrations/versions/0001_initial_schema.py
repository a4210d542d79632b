"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('teams',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('key_mask', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_team_id'), ['team_id'], unique=False)

    op.create_table('sandboxes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('alias', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cpu_count', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_mb', sa.Integer(), nullable=False),
    sa.Column('envd_version', sa.String(length=32), nullable=False),
    sa.Column('envd_access_token', sa.String(length=128), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('env_vars', sa.JSON(), nullable=False),
    sa.Column('auto_pause', sa.Boolean(), nullable=False),
    sa.Column('allow_internet_access', sa.Boolean(), nullable=True),
    sa.Column('network', sa.JSON(), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sandboxes_started_at'), ['started_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sandboxes_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_sandboxes_team_id'), ['team_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sandboxes_template_id'), ['template_id'], unique=False)

    op.create_table('templates',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=True),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('cpu_count', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_mb', sa.Integer(), nullable=False),
    sa.Column('envd_version', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_spawned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('spawn_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_templates_team_id'), ['team_id'], unique=False)

    op.create_table('builds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cpu_count', sa.Integer(), nullable=False),
    sa.Column('memory_mb', sa.Integer(), nullable=False),
    sa.Column('disk_mb', sa.Integer(), nullable=False),
    sa.Column('envd_version', sa.String(length=32), nullable=False),
    sa.Column('layers', sa.JSON(), nullable=False),
    sa.Column('start_cmd', sa.Text(), nullable=True),
    sa.Column('ready_cmd', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('builds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_builds_template_id'), ['template_id'], unique=False)

    op.create_table('template_aliases',
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('alias')
    )
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_template_aliases_template_id'), ['template_id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_template_aliases_template_id'))

    op.drop_table('template_aliases')
    with op.batch_alter_table('builds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_builds_template_id'))

    op.drop_table('builds')
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_templates_team_id'))

    op.drop_table('templates')
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sandboxes_template_id'))
        batch_op.drop_index(batch_op.f('ix_sandboxes_team_id'))
        batch_op.drop_index(batch_op.f('ix_sandboxes_state'))
        batch_op.drop_index(batch_op.f('ix_sandboxes_started_at'))

    op.drop_table('sandboxes')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_team_id'))

    op.drop_table('api_keys')
    op.drop_table('teams')
    

"""prime façade: prime_sandboxes, prime_image_builds

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prime_sandboxes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('docker_image', sa.Text(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('timeout_minutes', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_type', sa.String(length=32), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('pending_image_build_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('terminated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_prime_sandboxes_team_id', 'prime_sandboxes', ['team_id'])
    op.create_index('ix_prime_sandboxes_idempotency_key', 'prime_sandboxes', ['idempotency_key'])
    op.create_index('ix_prime_sandboxes_status', 'prime_sandboxes', ['status'])
    op.create_table('prime_image_builds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('artifact_id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('image_name', sa.String(length=255), nullable=False),
    sa.Column('image_tag', sa.String(length=128), nullable=False),
    sa.Column('full_image_path', sa.String(length=512), nullable=False),
    sa.Column('dockerfile_path', sa.Text(), nullable=True),
    sa.Column('source_image', sa.Text(), nullable=True),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('template_id', sa.String(length=64), nullable=True),
    sa.Column('sandlot_build_id', sa.String(length=64), nullable=True),
    sa.Column('image_config', sa.JSON(), nullable=True),
    sa.Column('size_bytes', sa.Integer(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_prime_image_builds_team_id', 'prime_image_builds', ['team_id'])
    op.create_index('ix_prime_image_builds_full_image_path', 'prime_image_builds', ['full_image_path'])
    op.create_index('ix_prime_image_builds_status', 'prime_image_builds', ['status'])


def downgrade() -> None:
    op.drop_table('prime_image_builds')
    op.drop_table('prime_sandboxes')

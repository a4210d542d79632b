"""lifecycle_events and webhooks: E2B's /events/sandboxes and /events/webhooks

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'lifecycle_events',
        sa.Column('seq', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('id', sa.String(length=36), nullable=False, unique=True),
        sa.Column('team_id', sa.String(length=64), sa.ForeignKey('teams.id', ondelete='CASCADE'), nullable=False),
        sa.Column('sandbox_id', sa.String(length=64), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
        sa.Column('body', sa.JSON(), nullable=False),
    )
    op.create_index('ix_lifecycle_events_team_seq', 'lifecycle_events', ['team_id', 'seq'])
    op.create_index('ix_lifecycle_events_team_sandbox_seq', 'lifecycle_events', ['team_id', 'sandbox_id', 'seq'])
    op.create_index('ix_lifecycle_events_timestamp', 'lifecycle_events', ['timestamp'])
    op.create_table(
        'webhooks',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('team_id', sa.String(length=64), sa.ForeignKey('teams.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('secret', sa.Text(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_webhooks_team_id', 'webhooks', ['team_id'])


def downgrade() -> None:
    op.drop_table('webhooks')
    op.drop_table('lifecycle_events')

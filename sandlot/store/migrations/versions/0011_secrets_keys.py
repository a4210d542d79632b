"""secrets, access_tokens, sandbox_runs: E2B's /secrets, /access-tokens and team metrics

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('secrets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('ciphertext', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('team_id', 'name', name='uq_secrets_team_name'),
    )
    op.create_index('ix_secrets_team_id', 'secrets', ['team_id'])
    op.create_table('access_tokens',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('token_mask', sa.String(length=64), nullable=False),
    sa.Column('refresh_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash'),
    sa.UniqueConstraint('refresh_hash'),
    )
    op.create_index('ix_access_tokens_team_id', 'access_tokens', ['team_id'])
    op.create_table('sandbox_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('team_id', sa.String(length=64), nullable=False),
    sa.Column('sandbox_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_sandbox_runs_team_started', 'sandbox_runs', ['team_id', 'started_at'])
    op.create_index('ix_sandbox_runs_sandbox_id', 'sandbox_runs', ['sandbox_id'])
    op.create_index('ix_sandbox_runs_ended_at', 'sandbox_runs', ['ended_at'])
    # sandboxes running across the upgrade count from their start (later ones: store/team_metrics.py)
    op.execute("INSERT INTO sandbox_runs (team_id, sandbox_id, started_at) SELECT team_id, id, started_at "
               "FROM sandboxes WHERE state IN ('running', 'pausing', 'killing')")


def downgrade() -> None:
    op.drop_table('sandbox_runs')
    op.drop_table('access_tokens')
    op.drop_table('secrets')

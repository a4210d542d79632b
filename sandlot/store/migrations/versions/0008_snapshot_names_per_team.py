"""snapshots.name: unique per team, not server-wide

Revision ID: 0008
Revises: 0002
Create Date: 2026-12-02

The table is rebuilt (the old constraint has no portable name): same columns and rows,
``UNIQUE (team_id, name)`` instead of ``UNIQUE (name)``.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = ('id', 'team_id', 'name', 'source_sandbox_id', 'template_id', 'build_id', 'alias', 'cpu_count',
           'memory_mb', 'disk_mb', 'envd_version', 'envd_access_token', 'env_vars', 'memory', 'path', 'created_at')


def _create(table: str, unique: tuple[str, ...], unique_name: str | None) -> None:
    op.create_table(table,
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
    sa.UniqueConstraint(*unique, name=unique_name)
    )


def _swap(unique: tuple[str, ...], unique_name: str | None) -> None:
    _create('snapshots_next', unique, unique_name)
    columns = ", ".join(COLUMNS)
    op.execute(f"INSERT INTO snapshots_next ({columns}) SELECT {columns} FROM snapshots")
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_source_sandbox_id'))
        batch_op.drop_index(batch_op.f('ix_snapshots_team_id'))
    op.drop_table('snapshots')
    op.rename_table('snapshots_next', 'snapshots')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_team_id'), ['team_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshots_source_sandbox_id'), ['source_sandbox_id'], unique=False)


def upgrade() -> None:
    _swap(('team_id', 'name'), 'uq_snapshots_team_name')


def downgrade() -> None:
    """Fails on a database where two teams use one name (as server-wide names must)."""
    _swap(('name',), None)

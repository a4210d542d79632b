"""template_aliases: names are unique per team namespace, not server-wide

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Each alias moves into its owner team's namespace (the team's slug, ``team-`` + the first 12
alphanumerics of its id; ``""`` for team-less templates such as ``base``). An alias that
already carried its owner's slug (a Prime image, ``team-1a2b…/app``) becomes the bare name.
"""
import re

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _slug(team_id: str | None) -> str:
    return "" if team_id is None else "team-" + re.sub(r"[^a-z0-9]", "", team_id.lower())[:12]


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT a.alias, a.template_id, t.team_id FROM template_aliases a JOIN templates t ON t.id = a.template_id"
    )).fetchall()
    op.create_table('template_names',
    sa.Column('namespace', sa.String(length=64), nullable=False),
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('namespace', 'alias')
    )
    taken = set()
    moved = []
    for alias, template_id, team_id in sorted(rows, key=lambda r: "/" in r[0]):  # bare names first
        namespace = _slug(team_id)
        name = alias[len(namespace) + 1:] if namespace and alias.startswith(namespace + "/") else alias
        if (namespace, name) in taken:
            name = alias
        taken.add((namespace, name))
        moved.append({"namespace": namespace, "alias": name, "template_id": template_id})
    if moved:
        op.bulk_insert(sa.table('template_names', sa.column('namespace'), sa.column('alias'), sa.column('template_id')), moved)
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_template_aliases_template_id'))
    op.drop_table('template_aliases')
    op.rename_table('template_names', 'template_aliases')
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_template_aliases_template_id'), ['template_id'], unique=False)


def downgrade() -> None:
    """Back to server-wide names: a namespaced alias keeps its ``slug/`` prefix."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT namespace, alias, template_id FROM template_aliases")).fetchall()
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_template_aliases_template_id'))
    op.drop_table('template_aliases')
    op.create_table('template_aliases',
    sa.Column('alias', sa.String(length=255), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('alias')
    )
    seen = set()
    back = []
    for namespace, alias, template_id in rows:
        name = alias if not namespace or alias in ("base", "code-interpreter-v1") else f"{namespace}/{alias}"
        if name not in seen:
            seen.add(name)
            back.append({"alias": name, "template_id": template_id})
    if back:
        op.bulk_insert(sa.table('template_aliases', sa.column('alias'), sa.column('template_id')), back)
    with op.batch_alter_table('template_aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_template_aliases_template_id'), ['template_id'], unique=False)

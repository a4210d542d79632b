"""Templates, their aliases and builds."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from sandlot import ids
from sandlot.store.models import Build, Template, TemplateAlias


def resolve(session: Session, team_id: str, name_or_id: str) -> Template | None:
    """Template by id or alias that ``team_id`` may use (its own or public); else ``None``."""
    name = name_or_id.split(":", 1)[0] if ":" in name_or_id else name_or_id
    template = session.get(Template, name)
    if template is None:
        alias = session.get(TemplateAlias, name)
        template = session.get(Template, alias.template_id) if alias else None
    if template is None:
        return None
    if template.public or template.team_id == team_id:
        return template
    return None


def visible(session: Session, team_id: str) -> list[Template]:
    stmt = select(Template).where(or_(Template.team_id == team_id, Template.public.is_(True)))
    return list(session.scalars(stmt.order_by(Template.created_at)))


def aliases(session: Session, template_id: str) -> list[str]:
    stmt = select(TemplateAlias.alias).where(TemplateAlias.template_id == template_id).order_by(TemplateAlias.alias)
    return list(session.scalars(stmt))


def builds(session: Session, template_id: str) -> list[Build]:
    stmt = select(Build).where(Build.template_id == template_id).order_by(Build.created_at.desc())
    return list(session.scalars(stmt))


def latest_ready_build(session: Session, template_id: str) -> Build | None:
    stmt = (
        select(Build)
        .where(Build.template_id == template_id, Build.status == "ready")
        .order_by(Build.finished_at.desc(), Build.created_at.desc())
    )
    return session.scalars(stmt).first()


def register_ready(
    session: Session,
    *,
    alias: str,
    team_id: str | None,
    public: bool,
    layers: list[str],
    cpu_count: int,
    memory_mb: int,
    disk_mb: int,
    envd_version: str,
) -> Template:
    """Create or refresh a template whose rootfs already exists (e.g. ``base``)."""
    now = datetime.now(timezone.utc)
    existing = session.get(TemplateAlias, alias)
    template = session.get(Template, existing.template_id) if existing else None
    if template is None:
        template = Template(
            id=ids.new_template_id(),
            team_id=team_id,
            public=public,
            cpu_count=cpu_count,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            envd_version=envd_version,
        )
        session.add(template)
        session.flush()
        session.add(TemplateAlias(alias=alias, template_id=template.id))
    build = latest_ready_build(session, template.id)
    if build is None or build.layers != layers or build.envd_version != envd_version:
        session.add(
            Build(
                id=ids.new_build_id(),
                template_id=template.id,
                status="ready",
                cpu_count=cpu_count,
                memory_mb=memory_mb,
                disk_mb=disk_mb,
                envd_version=envd_version,
                layers=layers,
                finished_at=now,
            )
        )
    template.envd_version = envd_version
    template.updated_at = now
    session.flush()
    return template


def mark_spawned(session: Session, template_id: str) -> None:
    template = session.get(Template, template_id)
    if template is not None:
        template.spawn_count += 1
        template.last_spawned_at = datetime.now(timezone.utc)

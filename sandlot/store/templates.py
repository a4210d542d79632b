"""Templates, their aliases and builds."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sandlot import ids
from sandlot.store.models import Build, BuildLogEntry, Sandbox, Team, Template, TemplateAlias, TemplateTag

SYSTEM_NAMESPACE = ""
"""Namespace of team-less templates (``base``)."""
BUILTIN_NAMES = ("base", "code-interpreter-v1", "mcp-gateway")
"""Templates the server registers itself; every team reaches them by bare name and no
other team may name a template so."""
SYSTEM_TEAM_NAME = "default"
"""The team that owns the server's own templates (``store/keys.DEFAULT_TEAM_NAME``)."""


def team_slug(team_id: str | None) -> str:
    """A team's namespace: ``team-`` + the first 12 alphanumerics of its id (also the Prime
    image prefix). It contains a ``-``, which Docker Hub namespaces never do, so
    ``team-…/name`` can never be mistaken for a registry reference."""
    return SYSTEM_NAMESPACE if not team_id else "team-" + re.sub(r"[^a-z0-9]", "", team_id.lower())[:12]


class ForeignNamespace(Exception):
    """A name was given another team's namespace (only the own one may be written)."""


def split_namespace(name: str) -> tuple[str | None, str]:
    """``team-x/app`` → (``team-x``, ``app``); ``app`` → (``None``, ``app``)."""
    namespace, sep, rest = name.partition("/")
    return (namespace, rest) if sep else (None, name)


def local_name(team_id: str, name: str) -> str:
    """The bare name a team writes: its own ``slug/`` prefix is dropped, another slug refused."""
    namespace, rest = split_namespace(name)
    if namespace is None:
        return name
    if namespace == team_slug(team_id):
        return rest
    raise ForeignNamespace(name)


def _named(session: Session, namespace: str, alias: str) -> Template | None:
    row = session.get(TemplateAlias, (namespace, alias))
    return session.get(Template, row.template_id) if row else None


def _system_team(session: Session, team_id: str | None) -> bool:
    if team_id is None:
        return True
    team = session.get(Team, team_id)
    return team is not None and team.name == SYSTEM_TEAM_NAME


def is_builtin(session: Session, template: Template) -> bool:
    """One of the server's own public templates (team-less, or the system team's)."""
    if not template.public or not _system_team(session, template.team_id):
        return False
    names = session.scalars(select(TemplateAlias.alias).where(TemplateAlias.template_id == template.id))
    return any(n in BUILTIN_NAMES for n in names)


def builtin(session: Session, name: str) -> Template | None:
    if name not in BUILTIN_NAMES:
        return None
    for row in session.scalars(select(TemplateAlias).where(TemplateAlias.alias == name)):
        template = session.get(Template, row.template_id)
        if template is not None and is_builtin(session, template):
            return template
    return None


def find_named(session: Session, team_id: str | None, name: str) -> Template | None:
    """The template ``name`` designates in ``team_id``'s own namespace (no visibility rules)."""
    return _named(session, team_slug(team_id), name)


def resolve(session: Session, team_id: str, name_or_id: str) -> Template | None:
    """Template by id or name that ``team_id`` may use; else ``None``.

    A bare name is the team's own template, else a built-in (``base``…); another team's
    public template only by its full ``team-slug/name``. So no team can shadow another's
    names, and a registry reference is never a template another team chose to name so."""
    name = split_tag(name_or_id)[0]
    template = session.get(Template, name)
    if template is None:
        namespace, rest = split_namespace(name)
        own = team_slug(team_id) if team_id else None
        if namespace is None:
            mine = _named(session, own, name) if own else None
            if mine is not None and mine.team_id != team_id:
                mine = None  # a slug collision (48 bits of two team ids) never lends a bare name
            template = mine or builtin(session, name)
        else:
            template = _named(session, namespace, rest)
            if template is None and own:   # a pre-0007 name with a '/' of the team's own
                template = _named(session, own, name)
    if template is None:
        return None
    if template.public or template.team_id == team_id:
        return template
    return None


def visible(session: Session, team_id: str) -> list[Template]:
    stmt = select(Template).where(or_(Template.team_id == team_id, Template.public.is_(True)))
    return list(session.scalars(stmt.order_by(Template.created_at)))


def aliases(session: Session, template_id: str) -> list[str]:
    """Bare names (E2B's deprecated ``aliases``)."""
    stmt = select(TemplateAlias.alias).where(TemplateAlias.template_id == template_id).order_by(TemplateAlias.alias)
    return list(session.scalars(stmt))


def names(session: Session, template: Template) -> list[str]:
    """Full names (E2B's ``names``): ``team-slug/name``; built-ins by their bare name."""
    bare = aliases(session, template.id)
    if template.team_id is None or is_builtin(session, template):
        return bare
    slug = team_slug(template.team_id)
    return [f"{slug}/{n}" for n in bare]


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
    template = find_named(session, team_id, alias)
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
        session.add(TemplateAlias(namespace=team_slug(team_id), alias=alias, template_id=template.id))
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


# --- builds of custom templates ------------------------------------------------------------

DEFAULT_TAG = "default"


class NameTaken(Exception):
    """The name is reserved: a built-in template's (``base``, ``code-interpreter-v1``, ``mcp-gateway``)."""


def split_tag(name: str) -> tuple[str, str | None]:
    base, _, tag = name.partition(":")
    return base, (tag or None)


def resolve_build(session: Session, team_id: str, name_or_id: str) -> tuple[Template, Build] | None:
    """The build ``name[:tag]`` designates: the tagged one, else the newest ready build."""
    template = resolve(session, team_id, name_or_id)
    if template is None:
        return None
    _, tag = split_tag(name_or_id)
    if tag is None:
        build = latest_ready_build(session, template.id)
    else:
        row = session.get(TemplateTag, (template.id, tag))
        build = session.get(Build, row.build_id) if row else None
    return (template, build) if build is not None else None


def request_build(
    session: Session, *, team_id: str, name: str, tags: list[str], cpu_count: int, memory_mb: int, disk_mb: int,
    envd_version: str,
) -> tuple[Template, Build]:
    """Template (created on first use of the name in the team's namespace) plus a new
    ``waiting`` build. ``name`` may carry the team's own ``slug/`` (``ForeignNamespace`` for
    another's); built-in names belong to their owner (``NameTaken``)."""
    now = datetime.now(timezone.utc)
    name = local_name(team_id, name)
    if name in BUILTIN_NAMES and not _system_team(session, team_id):
        raise NameTaken(name)   # reserved even before the server built it
    template = find_named(session, team_id, name)
    if template is not None and template.team_id != team_id:
        raise NameTaken(name)  # two teams whose slugs collide: first come, first served
    if template is None:
        template = Template(
            id=ids.new_template_id(), team_id=team_id, public=False, cpu_count=cpu_count, memory_mb=memory_mb,
            disk_mb=disk_mb, envd_version=envd_version, created_at=now, updated_at=now,
        )
        session.add(template)
        session.flush()
        session.add(TemplateAlias(namespace=team_slug(team_id), alias=name, template_id=template.id))
    build = Build(
        id=ids.new_build_id(), template_id=template.id, status="waiting", cpu_count=cpu_count, memory_mb=memory_mb,
        disk_mb=disk_mb, envd_version=envd_version, layers=[], tags=tags, created_at=now, updated_at=now,
    )
    session.add(build)
    template.updated_at = now
    session.flush()
    return template, build


def get_build(session: Session, template_id: str, build_id: str) -> Build | None:
    build = session.get(Build, build_id)
    return build if build is not None and build.template_id == template_id else None


def finish_build(session: Session, build: Build) -> None:
    """Mark ``build`` ready and point its tags (``default`` when none) at it."""
    now = datetime.now(timezone.utc)
    build.status = "ready"
    build.finished_at = now
    build.updated_at = now
    template = session.get(Template, build.template_id)
    if template is not None:
        template.cpu_count, template.memory_mb, template.disk_mb = build.cpu_count, build.memory_mb, build.disk_mb
        template.envd_version = build.envd_version
        template.updated_at = now
    for tag in build.tags or [DEFAULT_TAG]:
        _set_tag(session, build.template_id, tag, build.id)


def _set_tag(session: Session, template_id: str, tag: str, build_id: str) -> None:
    row = session.get(TemplateTag, (template_id, tag))
    if row is None:
        session.add(TemplateTag(template_id=template_id, tag=tag, build_id=build_id))
    else:
        row.build_id = build_id
        row.created_at = datetime.now(timezone.utc)


def fail_build(session: Session, build: Build, message: str, step: str | None) -> None:
    now = datetime.now(timezone.utc)
    build.status = "error"
    build.reason = message
    build.reason_step = step
    build.layers = []
    build.finished_at = now
    build.updated_at = now


def unfinished_builds(session: Session) -> list[Build]:
    return list(session.scalars(select(Build).where(Build.status.in_(("waiting", "building")))))


def append_logs(session: Session, build_id: str, entries: list[tuple[datetime, str, str, str | None]]) -> None:
    """Append ``(timestamp, level, message, step)`` lines after the last stored one."""
    last = session.scalar(select(func.max(BuildLogEntry.seq)).where(BuildLogEntry.build_id == build_id))
    seq = -1 if last is None else last
    for ts, level, message, step in entries:
        seq += 1
        session.add(BuildLogEntry(build_id=build_id, seq=seq, timestamp=ts, level=level, message=message, step=step))


LEVELS = ("debug", "info", "warn", "error")


def read_logs(
    session: Session, build_id: str, *, offset: int = 0, limit: int = 100, level: str | None = None,
    cursor_ms: int | None = None, backward: bool = False,
) -> list[BuildLogEntry]:
    """Log lines from ``offset`` (index among lines at or above ``level``), at most ``limit``."""
    stmt = select(BuildLogEntry).where(BuildLogEntry.build_id == build_id)
    if level in LEVELS:
        stmt = stmt.where(BuildLogEntry.level.in_(LEVELS[LEVELS.index(level):]))
    if cursor_ms is not None:
        at = datetime.fromtimestamp(cursor_ms / 1000, timezone.utc)
        stmt = stmt.where(BuildLogEntry.timestamp <= at if backward else BuildLogEntry.timestamp >= at)
    order = BuildLogEntry.seq.desc() if backward else BuildLogEntry.seq
    return list(session.scalars(stmt.order_by(order).offset(offset).limit(limit)))


# --- tags and management --------------------------------------------------------------------

def tags(session: Session, template_id: str) -> list[TemplateTag]:
    stmt = select(TemplateTag).where(TemplateTag.template_id == template_id).order_by(TemplateTag.tag)
    return list(session.scalars(stmt))


def build_tags(session: Session, build_id: str) -> list[str]:
    return list(session.scalars(select(TemplateTag.tag).where(TemplateTag.build_id == build_id).order_by(TemplateTag.tag)))


def assign_tags(session: Session, template: Template, build: Build, new_tags: list[str]) -> None:
    for tag in new_tags:
        _set_tag(session, template.id, tag, build.id)


def remove_tags(session: Session, template_id: str, names: list[str]) -> list[str]:
    """Delete the tags; returns those that did not exist."""
    missing = []
    for tag in names:
        row = session.get(TemplateTag, (template_id, tag))
        if row is None:
            missing.append(tag)
        else:
            session.delete(row)
    return missing


def live_sandboxes(session: Session, template_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Sandbox).where(Sandbox.template_id == template_id)) or 0


def delete_template(session: Session, template: Template) -> tuple[list[str], set[str]]:
    """Delete the template (its builds cascade); returns their post-ready snapshot dirs and
    their ids, which the caller cleans up after once the transaction committed."""
    gone = builds(session, template.id)
    snapshots = [b.ready_snapshot for b in gone if b.ready_snapshot]
    build_ids = {b.id for b in gone}
    for alias in session.scalars(select(TemplateAlias).where(TemplateAlias.template_id == template.id)):
        session.delete(alias)
    session.delete(template)
    return snapshots, build_ids


def ready_snapshot_paths(session: Session) -> set[str]:
    """Every post-ready snapshot dir a build points at (the others are orphans)."""
    return set(session.scalars(select(Build.ready_snapshot).where(Build.ready_snapshot.is_not(None))))

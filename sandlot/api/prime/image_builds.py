"""Prime image builds on Sandlot's template builder: context upload → Dockerfile → layers → template.

A build row's status is synced lazily from its template build (``waiting``/``building`` →
BUILDING, ``ready`` → COMPLETED, ``error`` → FAILED with the builder's reason), so no watcher
task is needed and a server restart cannot leave a build stuck.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import stat
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from sandlot import tenant_fs
from sandlot import quotas
from sandlot.api.prime import dockerfile
from sandlot.api.prime.context import PrimeContext
from sandlot.orchestrator.requests import ENVD_VERSION
from sandlot.store import templates as template_store
from sandlot.store.models import Build, PrimeImageBuild
from sandlot.templates.builder import BuildRequest
from sandlot.templates.uploads import UploadStore

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DOCKERFILE_MEMBER = ".__prime_dockerfile__"
MAX_DOCKERFILE_BYTES = 1 << 20


class BuildError(Exception):
    """Starting the build is impossible; the build ends FAILED with this message."""


def owner(team_id: str) -> str:
    """The namespace of a team's images in ``fullImagePath`` (also their template name prefix)."""
    return "team-" + re.sub(r"[^a-z0-9]", "", team_id.lower())[:12]


def full_image_path(team_id: str, name: str, tag: str) -> str:
    return f"{owner(team_id)}/{name}:{tag}"


def context_path(ctx: PrimeContext, build_id: str) -> Path:
    return ctx.services.settings.data_dir / "prime" / "contexts" / f"{build_id}.tar.gz"


def now() -> datetime:
    return datetime.now(timezone.utc)


def sync(session: Session, row: PrimeImageBuild) -> PrimeImageBuild:
    """Fold the template build's outcome into the Prime build row (idempotent)."""
    if row.status not in ("BUILDING", "PENDING") or not row.sandlot_build_id:
        return row
    build = session.get(Build, row.sandlot_build_id)
    if build is None:
        row.status, row.error_message, row.completed_at = "FAILED", "The template build was deleted", now()
    elif build.status == "ready":
        row.status, row.completed_at = "COMPLETED", build.finished_at or now()
        row.size_bytes = _size(build.layers)
    elif build.status == "error":
        row.status, row.completed_at = "FAILED", build.finished_at or now()
        row.error_message = build.reason or "The build failed"
    return row


def _size(layers: list[str]) -> int | None:
    total = 0
    for layer in layers[:1]:  # the image's own top layer; lower ones are shared with its base
        try:
            with tenant_fs.Tree(layer) as tree:  # a tenant-made tree: walked by fd, no symlink followed
                total += sum(st.st_size for _, st in tree.walk() if stat.S_ISREG(st.st_mode))
        except (OSError, tenant_fs.TreeError):
            pass
    return total or None


def _read_dockerfile(archive: Path, member: str) -> str:
    try:
        data = tenant_fs.read_tar_member(archive, member, MAX_DOCKERFILE_BYTES)
    except (tenant_fs.TreeError, OSError) as exc:
        raise BuildError(f"The uploaded build context is not a usable tar.gz archive: {exc}") from None
    if data is None:
        raise BuildError(f"The build context has no Dockerfile member '{member}'")
    return data.decode("utf-8", "replace")


async def _stash_context(store: UploadStore, team_id: str, archive: Path) -> str:
    """Put the context in the builder's content-addressed upload store; returns its hash."""
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    files_hash = digest.hexdigest()
    if not store.present(team_id, files_hash):

        async def chunks() -> AsyncIterator[bytes]:
            with open(archive, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    yield chunk

        await store.receive(team_id, files_hash, chunks())
    return files_hash


def prime_image(session: Session, team_id: str, ref: str) -> PrimeImageBuild | None:
    """Newest live build the team may use whose ``fullImagePath`` is ``ref`` (its own or a public
    one: the path names its team), or the team's *own* pull of the registry ref ``ref``: another
    team's "pull" may have been built from anything, so it never stands for the registry."""
    own = PrimeImageBuild.team_id == team_id
    stmt = (
        select(PrimeImageBuild)
        .where(
            or_(
                and_(PrimeImageBuild.full_image_path == ref, or_(own, PrimeImageBuild.visibility == "PUBLIC")),
                and_(PrimeImageBuild.source_image == ref, own),
            ),
            PrimeImageBuild.deleted.is_(False),
            PrimeImageBuild.status.notin_(("FAILED", "CANCELLED")),
        )
        .order_by(PrimeImageBuild.created_at.desc())
    )
    for row in session.scalars(stmt):
        if sync(session, row).status not in ("FAILED", "CANCELLED"):
            return row
    return None


def _base(session: Session, team_id: str, ref: str) -> tuple[str | None, str | None]:
    """``(from_template, from_image)``: Sandlot templates and Prime images first, else a registry pull."""
    built = prime_image(session, team_id, ref)
    if built is not None and built.status == "COMPLETED":
        return ref, None
    if template_store.resolve_build(session, team_id, ref) is not None:
        return ref, None
    return None, ref


async def start(ctx: PrimeContext, build_id: str) -> None:
    """PENDING → BUILDING (template build submitted) or FAILED (the Dockerfile cannot be built)."""
    with ctx.services.db.session() as session:
        row = session.get(PrimeImageBuild, build_id)
        assert row is not None
        team_id, name, tag, member, source = row.team_id, row.image_name, row.image_tag, row.dockerfile_path, row.source_image
    image_config: dict[str, Any] = {}
    builder = ctx.services.builder
    try:
        if builder is None:
            raise BuildError("image builds need the template builder, which this Sandlot server does not have")
        if source:
            plan = dockerfile.Plan(base=source)
        else:
            archive = context_path(ctx, build_id)
            text = _read_dockerfile(archive, member or DOCKERFILE_MEMBER)
            files_hash = await _stash_context(builder.uploads, team_id, archive)
            try:
                plan = dockerfile.parse(text, files_hash)
            except dockerfile.DockerfileError as exc:
                raise BuildError(f"Dockerfile: {exc}") from None
        image_config = {"startCommand": plan.start_command}
        for step in plan.steps:
            if step.kind == "USER":
                image_config["user"] = step.args[0]
            if step.kind == "WORKDIR":
                image_config["workdir"] = step.args[0]
        settings = ctx.services.settings
        with ctx.services.db.session() as session, session.begin():
            from_template, from_image = _base(session, team_id, plan.base)
            try:
                template, build = template_store.request_build(
                    session, team_id=team_id, name=f"{owner(team_id)}/{name}", tags=[tag],
                    cpu_count=settings.default_cpu_count, memory_mb=max(settings.default_memory_mb, 1024),
                    disk_mb=settings.default_disk_mb, envd_version=ENVD_VERSION,
                )
            except template_store.NameTaken:
                raise BuildError(f"The image name {owner(team_id)}/{name} belongs to another team") from None
            quotas.reserve_build(session, settings, team_id, error=lambda _status, message: BuildError(message))
            build.status = "building"
            row = session.get(PrimeImageBuild, build_id)
            assert row is not None
            row.status, row.started_at = "BUILDING", now()
            row.template_id, row.sandlot_build_id, row.image_config = template.id, build.id, image_config
            sandlot_build_id = build.id
        builder.submit(
            sandlot_build_id,
            BuildRequest(team_id=team_id, steps=plan.steps, from_image=from_image, from_template=from_template),
        )
    except BuildError as exc:
        with ctx.services.db.session() as session, session.begin():
            row = session.get(PrimeImageBuild, build_id)
            assert row is not None
            stamp = now()
            row.status, row.error_message = "FAILED", str(exc)
            row.started_at, row.completed_at = row.started_at or stamp, stamp


def source_names(source: str) -> tuple[str, str]:
    """Destination ``name:tag`` of a source-image build: the last path component and its tag."""
    ref = source.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return re.sub(r"[^a-z0-9._-]", "-", name.lower()).strip("-._") or "image", tag or "latest"



def new_row(team_id: str, name: str, tag: str, *, source_image: str | None, dockerfile_path: str | None,
            platform: str = "linux/amd64", visibility: str = "PRIVATE") -> PrimeImageBuild:
    return PrimeImageBuild(
        id="b_" + secrets.token_hex(10),
        artifact_id="a_" + secrets.token_hex(10),
        team_id=team_id,
        image_name=name,
        image_tag=tag,
        full_image_path=full_image_path(team_id, name, tag),
        dockerfile_path=dockerfile_path,
        source_image=source_image,
        platform=platform,
        visibility=visibility,
        status="PENDING",
        created_at=now(),
    )


async def pull_on_first_use(ctx: PrimeContext, team_id: str, ref: str) -> str:
    """Start a source-image build for a registry ref a sandbox asked for; returns its build id."""
    name, tag = source_names(ref)
    row = new_row(team_id, name, tag, source_image=ref, dockerfile_path=None)
    with ctx.services.db.session() as session, session.begin():
        session.add(row)
    await start(ctx, row.id)
    return row.id

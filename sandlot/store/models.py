"""Tables of the control plane.

Portable SQL only (SQLite by default, PostgreSQL by URL): strings, integers,
booleans, timestamps and JSON.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored and returned as aware UTC datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # --- migration 0010 ---
    quotas: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    """The operator's per-team overrides of ``SANDLOT_QUOTA_*`` (``sandlot keys quota``), e.g.
    ``{"concurrent_sandboxes": 100}``; absent keys use the server's settings."""


class ApiKey(Base):
    """An API key; only its SHA-256 is stored, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_mask: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), nullable=True, index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    envd_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_spawned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    spawn_count: Mapped[int] = mapped_column(Integer, default=0)


class TemplateAlias(Base):
    """A human name of a template, unique within its owner team's namespace (migration 0007).

    ``namespace`` is the owner's slug (``store/templates.team_slug``; ``""`` for the team-less
    ``base``), ``alias`` the bare name: ``team-1a2b3c4d5e6f/app`` is (``team-1a2b3c4d5e6f``, ``app``).
    """

    __tablename__ = "template_aliases"

    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(255), primary_key=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), index=True)


class Build(Base):
    """One build of a template; ``rootfs`` is the finished read-only layer stack."""

    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    envd_version: Mapped[str] = mapped_column(String(32))
    layers: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Layer directories of the finished rootfs, topmost first."""
    start_cmd: Mapped[str | None] = mapped_column(Text, nullable=True)
    ready_cmd: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # --- template builds (migration 0003) ---
    env_vars: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    """ENV of the finished template, given to sandboxes created from it."""
    default_user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    default_workdir: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Tags requested for this build; they point at it once it is ready."""
    reason_step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # --- post-ready snapshot (migration 0006) ---
    ready_snapshot: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Dir of a memory snapshot taken once startCmd/readyCmd passed; sandboxes restore it."""
    # --- blob store (migration 0022) ---
    layer_blobs: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    """``[{"path", "digest"}]``: the blob (tar) of each entry of ``layers`` outside the shared images
    dir, published by a ``sandlot node`` build so other nodes can fetch it (``templates/layer_blobs.py``)."""
    # --- scale-out (migration 0021) ---
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    """The node running (or that ran) the build: a restarting node fails only its own unfinished builds."""


class BuildLogEntry(Base):
    """One line of a build's log, numbered so pollers can resume at an offset."""

    __tablename__ = "build_log_entries"

    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    step: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TemplateTag(Base):
    """``name:tag`` → build; the same tag moves to the newest build that asked for it."""

    __tablename__ = "template_tags"

    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sandbox(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    template_id: Mapped[str] = mapped_column(String(64), index=True)
    build_id: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    """``creating``, ``running``, ``paused`` or ``killing``."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    envd_version: Mapped[str] = mapped_column(String(32))
    envd_access_token: Mapped[str] = mapped_column(String(128))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    env_vars: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    auto_pause: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_internet_access: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    network: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # --- pause/resume (migration 0002) ---
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_memory: Mapped[bool] = mapped_column(Boolean, default=True)
    """Pause mode at timeout (and default of ``POST /pause``): ``False`` = filesystem only."""
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # --- guest health at pause (migration 0013) ---
    envd_unresponsive_at_pause: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The memory image was taken while envd did not answer: only a resume without memory may use it."""
    # --- volumes (migration 0014) ---
    volume_mounts: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    """``[{"volumeID", "name", "path"}]``: the team's volumes bound read-write into the sandbox."""
    # --- blob store (migration 0022) ---
    pause_image: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """``{"digest", "node", "memory"}``: the last pause's image in the blob store, which another
    node fetches to resume the sandbox there (``orchestrator/adoption.py``); ``None`` otherwise."""
    # --- hot pause (migration 0023) ---
    pause_hot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Paused with its memory still live: the container is frozen, not yet dumped by CRIU
    (``orchestrator/cooling.py`` turns it into a checkpoint later). Only meaningful while ``paused``."""
    # --- scale-out (migration 0021) ---
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    """The node that holds the sandbox (its container, or its pause image); ``None`` for rows from before 0021."""


class Snapshot(Base):
    """A saved sandbox (disk copy + optional CRIU memory image) that new sandboxes start from."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_snapshots_team_name"),)
    """Names are per team (migration 0008), like template names."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source_sandbox_id: Mapped[str] = mapped_column(String(64), index=True)
    template_id: Mapped[str] = mapped_column(String(64))
    build_id: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    envd_version: Mapped[str] = mapped_column(String(32))
    envd_access_token: Mapped[str] = mapped_column(String(128))
    """The token baked into the image's envd memory; clones rotate it through envd ``/init``."""
    env_vars: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    memory: Mapped[bool] = mapped_column(Boolean, default=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # --- the source's network policy, which every clone keeps (migration 0009) ---
    allow_internet_access: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    network: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # --- the source's volume mounts, which every clone shares (migration 0014) ---
    volume_mounts: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    # --- scale-out (migration 0021) ---
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    """The node whose disk holds the snapshot; creates from it are placed there."""
    image: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """``{"digest", "node"}`` of the snapshot's tree in the blob store (``sandlot node``, migration 0024)."""


# --- Prime Intellect façade (migration 0005) -------------------------------------------------


class PrimeSandbox(Base):
    """Prime-only facts of a sandbox made through ``/api/v1/sandbox``.

    Outlives the ``sandboxes`` row (which is deleted on kill) so Prime clients
    can still read ``TERMINATED``/``TIMEOUT``/``ERROR`` after the sandbox is gone.
    """

    __tablename__ = "prime_sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Same id as the ``sandboxes`` row: one sandbox, two façades."""
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    docker_image: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """cpuCores, memoryGB, diskSizeGB, startCommand, environmentVars, network lists, region."""
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    timeout_minutes: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """Last status written by the façade: PENDING, RUNNING, ERROR or TERMINATED."""
    error_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending_image_build_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PrimeImageBuild(Base):
    """One Prime image build group (a single ``VM_SANDBOX`` artifact) and the image it made."""

    __tablename__ = "prime_image_builds"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    image_name: Mapped[str] = mapped_column(String(255))
    image_tag: Mapped[str] = mapped_column(String(128))
    full_image_path: Mapped[str] = mapped_column(String(512), index=True)
    dockerfile_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_image: Mapped[str | None] = mapped_column(Text, nullable=True)
    platform: Mapped[str] = mapped_column(String(32))
    visibility: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    template_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sandlot_build_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The template build that holds this image's layers (tags move; this does not)."""
    image_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """startCommand (from CMD/ENTRYPOINT), user and workdir for sandboxes of this image."""
    size_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- lifecycle events and webhooks (migration 0012) -----------------------------------------


class LifecycleEvent(Base):
    """One sandbox lifecycle event as E2B's ``/events/sandboxes`` serves it (``body``), per team.

    Outlives the sandbox row; bounded by ``SANDLOT_EVENTS_RETENTION_DAYS`` and
    ``SANDLOT_EVENTS_MAX_PER_TEAM`` (``store/events.py``)."""

    __tablename__ = "lifecycle_events"
    __table_args__ = (Index("ix_lifecycle_events_team_seq", "team_id", "seq"),
                      Index("ix_lifecycle_events_team_sandbox_seq", "team_id", "sandbox_id", "seq"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Insertion order: the order events are listed in (timestamps may tie)."""
    id: Mapped[str] = mapped_column(String(36), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    sandbox_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class Webhook(Base):
    """A team's lifecycle webhook. ``secret`` signs deliveries and is never returned."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- secrets, access tokens and team metrics (migration 0011) -------------------------------


class TeamSecret(Base):
    """A team's secret. Only the current value is kept, AES-GCM encrypted with the data dir's
    ``secrets.key`` (``store/secrets.py``): no route returns it, and a copy of the database
    alone does not reveal it. An update replaces it and counts ``current_version`` up."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_secrets_team_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """``sec_`` + a 26-character TypeID (a UUIDv7), as E2B's."""
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccessToken(Base):
    """An access token (``sk_e2b_…``): E2B's credential for ``GET /teams`` (``e2b auth login``).
    Sandlot has no users, so a token belongs to the team whose key made it. Stored hashed, like
    keys; ``refresh_hash`` is set for tokens the CLI login made (OAuth refresh, rotated)."""

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_mask: Mapped[str] = mapped_column(String(64))
    refresh_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SandboxRun(Base):
    """One stretch of a sandbox running (create or resume → pause or kill), per team: what
    ``GET /teams/{id}/metrics`` counts. Sandbox rows are deleted at kill; these are not."""

    __tablename__ = "sandbox_runs"
    __table_args__ = (Index("ix_sandbox_runs_team_started", "team_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


# --- volumes (migration 0014) -----------------------------------------------------------------


class Volume(Base):
    """A team's named persistent volume: an ext4 image in the data dir (``runtime/volume_disk.py``)
    that sandboxes mount read-write and the volume-content API reads and writes."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_volumes_team_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """A UUID, as E2B's (anything else in a path answers 400 before a lookup)."""
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    size_mb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), default="e2b", server_default="e2b")
    """``e2b`` (the E2B API's); Prime's (``orchestrator/prime_volumes.py``): ``prime`` (the named
    volume, no image of its own), ``prime-version`` (a published head) and ``prime-copy`` (one
    sandbox's private copy, bound like an E2B volume)."""
    prime_volume_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A version's or copy's ``prime`` volume."""
    head_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """``prime``: its current head version; ``prime-copy``: the version it was copied from."""
    sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """``prime-copy``: the sandbox that owns it; ``prime-version``: the sandbox that published it."""


class Node(Base):
    """A server that runs sandboxes, as the admin routes (``GET /nodes``) show it. Today every
    ``sandlot serve`` is one node and registers itself at start (``orchestrator/nodes.py``)."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))
    """Where the node's API listens (``host:port``), for operators."""
    status: Mapped[str] = mapped_column(String(16))
    """``ready`` or ``draining`` (set by an operator); staleness is computed from ``last_heartbeat``."""
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    sandbox_slots: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

"""Runs template builds: base → steps (each a cached layer) → start/ready check → register.

A build only becomes visible to sandboxes in its last transaction (layers, config,
tags, status ``ready``, post-ready snapshot); any failure before leaves the build
``error`` with the step, exit code and last log lines, removes its build sandbox and
keeps only complete, immutable layers in the cache. A snapshot that cannot be taken
only costs a warning: sandboxes then run the start command themselves.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from sandlot.blobstore import BlobError
from sandlot.orchestrator.nodes import default_node_id
from sandlot.runtime.base import BindMount, Runtime, SandboxHandle
from sandlot.settings import Settings
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Build
from sandlot.templates import commands, files_hash, gc, oci, steps, uploads
from sandlot.templates.build_log import BuildLog
from sandlot.templates.build_sandbox import BuildSandboxes, new_build_sandbox_id
from sandlot.templates.flatten import flatten
from sandlot.templates.layer_blobs import LayerBlobs, LayerUnavailable
from sandlot.templates.layers import Layer, LayerStore
from sandlot.templates.steps import BuildConfig, Step

if TYPE_CHECKING:
    from sandlot.orchestrator.ready_snapshots import ReadySnapshots
    from sandlot.orchestrator.requests import EnvdLauncher

log = structlog.get_logger("sandlot.templates")

BASE_IMAGES = ("e2bdev/base", "docker.io/e2bdev/base")
"""E2B's default base image; served by our own ``base`` template (same user and workdir)."""
BASE_CONFIG = BuildConfig(env={}, user="user", workdir="/home/user")


class BuildFailed(Exception):
    def __init__(self, message: str, step: str) -> None:
        super().__init__(message)
        self.message = message
        self.step = step


@dataclass
class BuildRequest:
    """``TemplateBuildStartV2`` after validation."""

    team_id: str
    steps: list[Step]
    from_image: str | None = None
    from_template: str | None = None
    registry: dict[str, Any] | None = None
    force: bool = False
    start_cmd: str | None = None
    ready_cmd: str | None = None


@dataclass
class Base:
    key: str
    layers: list[Path]
    config: BuildConfig
    description: str


@dataclass
class _Progress:
    layers: list[Path] = field(default_factory=list)
    key: str = ""
    config: BuildConfig = field(default_factory=BuildConfig)
    cache_broken: bool = False


def _record_result(build: Build, request: BuildRequest, state: _Progress) -> None:
    """What a finished build holds; the sandboxes made from it (and its start check) use it."""
    build.layers = [str(p) for p in state.layers]
    build.env_vars = state.config.env
    build.default_user = state.config.user
    build.default_workdir = state.config.workdir
    build.start_cmd = request.start_cmd
    build.ready_cmd = request.ready_cmd


def config_of(build: Build) -> BuildConfig:
    if build.default_user is None and build.default_workdir is None and not build.env_vars:
        return BASE_CONFIG
    return BuildConfig(env=dict(build.env_vars or {}), user=build.default_user or "root",
                       workdir=build.default_workdir or "/")


class TemplateBuilder:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, envd_launch: EnvdLauncher,
                 ready_snapshots: "ReadySnapshots") -> None:
        self.settings = settings
        self.db = db
        self.ready_snapshots = ready_snapshots
        """Boots the start check like the orchestrator boots sandboxes, and snapshots it."""
        self.layers = LayerStore(settings.templates_dir / "layers", settings.instance)
        self.uploads = uploads.UploadStore(settings.templates_dir / "files", max_bytes=settings.upload_max_bytes,
                                           **uploads.cluster_options(settings))
        self.layer_blobs = LayerBlobs(settings)
        """Under ``sandlot node``: layers of other nodes' builds fetched, this node's builds published."""
        self.images = oci.ImageStore(settings.templates_dir / "images", settings.templates_dir / "layers" / ".staging" / settings.instance,
                                     allow_private=settings.registry_allow_private)
        self._http = httpx.AsyncClient()
        self.sandboxes = BuildSandboxes(settings, runtime, envd_launch, self._http)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.build_max_concurrent)
        self.node_id = default_node_id(settings)
        """Stamped on the builds this server runs: a restarting ``sandlot node`` fails only its own."""
        self.finished: list[Callable[[str, bool, float], None]] = []
        """Told (build id, succeeded, seconds since submitted) when a build ends (``telemetry.py``)."""

    async def start(self) -> None:
        self.layers.start()
        # `sandlot template gc` of any server sharing the data dir must see our builds' layers
        gc.register_database(self.settings.templates_dir, self.settings.effective_database_url)
        with self.db.session() as session, session.begin():
            for build in template_store.unfinished_builds(session):
                if build.status == "building" and self._ours(build):
                    template_store.fail_build(session, build, "The server restarted during the build; start it again", "base")

    def runs_elsewhere(self, build: Build) -> bool:
        """Whether another node of the cluster runs ``build`` (its own restart settles it if it died)."""
        return self.settings.role == "node" and build.node_id not in (None, self.node_id)

    def _ours(self, build: Build) -> bool:
        """Whether this server ran ``build`` (on a single box every build is its own)."""
        return self.settings.role != "node" or build.node_id in (None, self.node_id)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self._http.aclose()

    def running(self, build_id: str) -> bool:
        return build_id in self._tasks

    def submit(self, build_id: str, request: BuildRequest) -> None:
        task = asyncio.create_task(self._run(build_id, request))
        self._tasks[build_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(build_id, None))

    # --- one build ---------------------------------------------------------------------------

    async def _run(self, build_id: str, request: BuildRequest) -> None:
        blog = BuildLog(self.db, build_id)
        started = time.monotonic()
        ok = False
        with self.db.session() as session, session.begin():
            claimed = session.get(Build, build_id)
            if claimed is not None:
                claimed.node_id = self.node_id
        try:
            async with self._slots, blog.live():
                with self.db.session() as session, session.begin():
                    build = session.get(Build, build_id)
                    assert build is not None
                    build.status = "building"
                    build.updated_at = datetime.now(timezone.utc)
                    cpu, memory = build.cpu_count, build.memory_mb
                blog.line(f"Building template with {len(request.steps)} step(s)")
                base = await self._base(request, blog)
                state = _Progress(layers=list(base.layers), key=base.key, config=base.config,
                                  cache_broken=request.force)
                for step in request.steps:
                    await self._step(build_id, step, len(request.steps), state, request, blog, cpu, memory)
                if len(state.layers) > self.settings.build_max_layers:
                    state.layers, state.key = await self._flatten(state, blog)
                snapshot = None
                if request.start_cmd or request.ready_cmd:
                    snapshot = await self._check_start(build_id, request, state, blog)
                try:
                    blobs = await self._publish(state, blog)
                    self._register(build_id, request, state, snapshot, blobs)
                except BaseException:
                    if snapshot is not None:
                        await self.ready_snapshots.discard([str(snapshot)])
                    raise
                blog.line(f"Build finished in {time.monotonic() - started:.1f}s: {len(state.layers)} layer(s)")
                ok = True
        except BuildFailed as exc:
            self._fail(build_id, blog, exc.message, exc.step)
        except asyncio.CancelledError:
            self._fail(build_id, blog, "The build was cancelled (server shutting down)", "base")
            raise
        except Exception as exc:  # every failure must end the build as `error`
            log.exception("template build crashed", build_id=build_id)
            self._fail(build_id, blog, f"Internal build error: {exc}", "base")
        finally:
            blog.flush()
            for listener in self.finished:
                try:
                    listener(build_id, ok, time.monotonic() - started)
                except Exception:   # a listener's bug never fails a build
                    log.exception("build listener failed", build_id=build_id)

    def _fail(self, build_id: str, blog: BuildLog, message: str, step: str) -> None:
        blog.line(message, level="error", step=step)
        blog.flush()
        with self.db.session() as session, session.begin():
            build = session.get(Build, build_id)
            if build is not None:
                template_store.fail_build(session, build, message, step)
        log.warning("template build failed", build_id=build_id, step=step, reason=message[:300])

    async def _publish(self, state: _Progress, blog: BuildLog) -> list[dict[str, str]] | None:
        """Under ``sandlot node``: the layers into the blob store, so any node can start the build."""
        if not self.layer_blobs.enabled:
            return None
        t0 = time.monotonic()
        try:
            blobs = await self.layer_blobs.publish(state.layers)
        except (BlobError, OSError) as exc:
            raise BuildFailed(f"Publishing the layers to the blob store failed: {exc}", "finalize") from exc
        blog.line(f"Published {len(blobs or [])} layer(s) to the blob store in {time.monotonic() - t0:.1f}s",
                  step="finalize", level="debug")
        return blobs

    def _register(self, build_id: str, request: BuildRequest, state: _Progress, snapshot: Path | None,
                  blobs: list[dict[str, str]] | None = None) -> None:
        with self.db.session() as session, session.begin():
            build = session.get(Build, build_id)
            if build is None:
                raise BuildFailed("The template was deleted during the build", "finalize")
            _record_result(build, request, state)
            build.layer_blobs = blobs
            build.ready_snapshot = str(snapshot) if snapshot is not None else None
            template_store.finish_build(session, build)

    # --- base ----------------------------------------------------------------------------------

    async def _base(self, request: BuildRequest, blog: BuildLog) -> Base:
        if request.from_template:
            with self.db.session() as session:
                found = template_store.resolve_build(session, request.team_id, request.from_template)
                if found is None:
                    raise BuildFailed(f"Base template '{request.from_template}' not found or has no ready build", "base")
                _template, build = found
                config = config_of(build)
                session.expunge(build)
            try:   # built on another node: its layers fetched onto this one (a no-op on a single box)
                layers = await self.layer_blobs.ensure(build)
            except (LayerUnavailable, BlobError) as exc:
                raise BuildFailed(f"Base template '{request.from_template}': {exc}", "base") from exc
            # used from now on even if that template is deleted during this build
            if not gc.keep_alive_paths(self.settings.templates_dir, layers):
                raise BuildFailed(f"Base template '{request.from_template}' lost layers to `sandlot template gc`; "
                                  "rebuild it", "base")
            blog.line(f"FROM template {request.from_template} (build {build.id})", step="base")
            return Base(steps.base_key("template", [build.layers, config.as_json()]), layers, config, request.from_template)
        image = request.from_image or "e2bdev/base"
        if image.split(":", 1)[0] in BASE_IMAGES:
            return self._base_template(blog, image)
        blog.line(f"FROM {image}: pulling", step="base")
        try:
            pulled = await self.images.pull(image, request.registry, lambda line: blog.line(line, step="base"))
        except oci.PullError as exc:
            raise BuildFailed(f"Pulling image '{image}' failed: {exc}", "base") from exc
        blog.line(f"Image {image} is {pulled.digest}", step="base")
        return Base(steps.base_key("image", pulled.digest), [pulled.rootfs], pulled.config, image)

    def _base_template(self, blog: BuildLog, image: str) -> Base:
        with self.db.session() as session:
            found = template_store.resolve_build(session, "", "base")
            if found is None:
                raise BuildFailed("The base template is not installed", "base")
            layers = [Path(p) for p in found[1].layers]
        blog.line(f"FROM {image} (Sandlot's base template: Debian bookworm)", step="base")
        return Base(steps.base_key("template", [[str(p) for p in layers], BASE_CONFIG.as_json()]), layers, BASE_CONFIG, "base")

    # --- steps ---------------------------------------------------------------------------------

    async def _step(self, build_id: str, step: Step, total: int, state: _Progress, request: BuildRequest,
                    blog: BuildLog, cpu: int, memory: int) -> None:
        label = str(step.number)
        if len(state.layers) >= self.settings.build_max_layers:
            state.layers, state.key = await self._flatten(state, blog)
        forced = step.force or request.force
        archive, content = (await self._checked_archive(request.team_id, step, blog)) if step.kind == "COPY" else (None, "")
        try:
            key = steps.key(state.key, step, salt=f"force:{build_id}" if forced else "", content=content)
            prefix = f"[{step.number}/{total}] {step.describe()}"
            cached = None if (forced or state.cache_broken) else self.layers.lookup(key)
            if cached is not None:
                blog.line(f"CACHED {prefix}", step=label)
            else:
                state.cache_broken = True
                blog.line(prefix, step=label)
                t0 = time.monotonic()
                cached = await self._execute(step, state, request, blog, cpu, memory, key, archive)
                blog.line(f"{prefix}: done in {time.monotonic() - t0:.1f}s", step=label, level="debug")
        finally:
            if archive is not None:
                shutil.rmtree(archive.parent, ignore_errors=True)
        if cached.fs is not None:
            state.layers.insert(0, cached.fs)
        state.key = key
        state.config = steps.apply(step, state.config)

    async def _execute(self, step: Step, state: _Progress, request: BuildRequest, blog: BuildLog, cpu: int,
                       memory: int, key: str, archive: Path | None = None) -> Layer:
        meta = {"step": step.describe()}
        if step.kind == "ENV":
            return self.layers.commit(key, None, meta)
        label = str(step.number)
        user, script, mounts = "root", "", []
        context: Path | None = None
        try:
            if step.kind == "RUN":
                user = step.args[1] if len(step.args) > 1 and step.args[1] else state.config.user
                script = step.args[0]
            elif step.kind == "WORKDIR":
                script = commands.workdir_script(steps.absolute(step.args[0], state.config.workdir), state.config.user)
            elif step.kind == "USER":
                script = commands.user_script(step.args[0], len(step.args) > 1 and step.args[1] == "true")
            elif step.kind == "COPY":
                assert archive is not None
                context, sources = self._context(archive, step)
                mounts = [BindMount(context, commands.CONTEXT_MOUNT, read_only=True)]
                owner = step.args[2] if len(step.args) > 2 else ""
                mode = step.args[3] if len(step.args) > 3 else ""
                dest = steps.absolute(step.args[1], state.config.workdir)
                script = commands.copy_script(sources, dest, owner, mode)
            upper = self.layers.staging()
            async with self.sandboxes.open(state.layers, state.config, cpu_count=cpu, memory_mb=memory,
                                           keep_upper=upper, mounts=mounts) as sandbox:
                code = await sandbox.run(script, lambda stream, text: blog.output(stream, text, label), user=user)
                blog.end_output(label)
                if code != 0:
                    tail = "\n".join(blog.tail)
                    raise BuildFailed(
                        f"Step {step.number} ({step.describe()[:200]}) failed with exit code {code}"
                        + (f"; last output:\n{tail}" if tail else ""), label)
            return self.layers.commit(key, upper, meta)
        except BuildFailed:
            raise
        except Exception as exc:
            raise BuildFailed(f"Step {step.number} ({step.describe()[:200]}) could not run: {exc}", label) from exc
        finally:
            if context is not None:
                shutil.rmtree(context.parent, ignore_errors=True)

    async def _checked_archive(self, team_id: str, step: Step, blog: BuildLog) -> tuple[Path, str]:
        """A private snapshot of the step's upload and its sha256 (the layer key's part), once
        its content is what ``filesHash`` claims; a mismatching upload is deleted."""
        assert step.files_hash is not None
        label = str(step.number)
        tmp = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.layers.staging_root))
        try:
            archive = await asyncio.to_thread(self.uploads.snapshot, team_id, step.files_hash, tmp / "archive.tar")
            if archive is None:
                raise BuildFailed(f"Step {step.number}: the files for COPY {step.args[0]} were not uploaded "
                                  f"(filesHash {step.files_hash})", label)
            digest = await asyncio.to_thread(files_hash.sha256_file, archive)
            try:
                recipe = await asyncio.to_thread(files_hash.verify, archive, digest, step.args[0], step.args[1],
                                                 step.files_hash)
            except files_hash.Mismatch as exc:
                self.uploads.discard(team_id, step.files_hash, archive)
                raise BuildFailed(f"Step {step.number}: the files uploaded for COPY {step.args[0]} do not match its "
                                  f"filesHash {step.files_hash} ({exc}); the upload was deleted, build again to "
                                  "re-upload it", label) from None
            if recipe is None:
                blog.line(f"COPY {step.args[0]}: filesHash not checkable for this archive (directories, JS SDK); "
                          f"its layer is keyed by the archive's sha256 {digest}", level="debug", step=label)
            return archive, digest
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _context(self, archive: Path, step: Step) -> tuple[Path, list[str]]:
        context = archive.parent / "ctx"
        uploads.extract(archive, context)
        sources = uploads.matches(context, step.args[0])
        if not sources:
            raise BuildFailed(f"Step {step.number}: COPY {step.args[0]}: no files match", str(step.number))
        return context, sources

    # --- finalize --------------------------------------------------------------------------------

    async def _flatten(self, state: _Progress, blog: BuildLog) -> tuple[list[Path], str]:
        blog.line(f"Flattening {len(state.layers)} layers into one (overlay stacking limit)", step="finalize")
        key = steps.base_key("flat", state.key)
        layer = self.layers.lookup(key)
        if layer is None:
            dest = self.layers.staging()
            await asyncio.to_thread(flatten, state.layers, dest, self.layers.staging())
            layer = self.layers.commit(key, dest, {"step": "flatten"})
        assert layer.fs is not None
        return [layer.fs], key

    async def _check_start(self, build_id: str, request: BuildRequest, state: _Progress,
                           blog: BuildLog) -> Path | None:
        """Run startCmd and wait for readyCmd in a sandbox made exactly as the build's
        sandboxes will be (same spec and start-up path as a warm-pool sandbox), then keep a
        memory snapshot of that post-ready state for them to restore. Returns its dir, or
        ``None`` when it could not be taken (sandboxes then run the start command)."""
        with self.db.session() as session:
            like = session.get(Build, build_id)
            if like is None:
                raise BuildFailed("The template was deleted during the build", "finalize")
            session.expunge(like)  # a detached copy: the row as it will be once registered, never saved
        _record_result(like, request, state)
        try:
            async with self.ready_snapshots.booted(like, new_build_sandbox_id()) as handle:
                if request.start_cmd:
                    blog.line(f"Running start command: {request.start_cmd}", step="finalize")
                if request.ready_cmd:
                    blog.line(f"Waiting for ready command: {request.ready_cmd}", step="finalize")
                t0 = time.monotonic()
                await self.ready_snapshots.prepare(handle, like)
                if request.ready_cmd:
                    blog.line(f"Template is ready ({time.monotonic() - t0:.1f}s after start)", step="finalize")
                return await self._save_snapshot(handle, build_id, blog)
        except BuildFailed:
            raise
        except TimeoutError as exc:
            raise BuildFailed(str(exc), "finalize") from exc
        except Exception as exc:
            raise BuildFailed(f"Start/ready check could not run: {exc}", "finalize") from exc

    async def _save_snapshot(self, handle: SandboxHandle, build_id: str, blog: BuildLog) -> Path | None:
        """Never fails the build: e.g. CRIU cannot dump everything a start command may do."""
        try:
            path, ms = await self.ready_snapshots.save(handle, build_id)
        except Exception as exc:  # any: a build that reached ready stays usable without its snapshot
            blog.line(f"Could not save a post-ready snapshot, sandboxes will run the start command when "
                      f"created: {str(exc)[:1000]}", level="warn", step="finalize")
            log.warning("post-ready snapshot failed", build_id=build_id, error=str(exc)[:500])
            return None
        blog.line(f"Saved post-ready snapshot ({ms:.0f} ms)", step="finalize")
        return path

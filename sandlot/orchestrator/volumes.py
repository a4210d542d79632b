"""E2B volumes: named, per team, persistent, mounted read-write into any number of sandboxes.

A volume is a row (``store/volumes.py``) and an ext4 image under the data dir
(``runtime/volume_disk.py``). The image is loop-mounted on the host while anything needs
it — a sandbox that is creating, running, pausing, resuming or being killed with it
mounted, or a volume-content request in flight — and unmounted when the last one goes
(a kill, a pause, the content API idle for ``SANDLOT_VOLUME_IDLE_UNMOUNT_S``, and at
start-up for volumes nothing uses any more). Sandboxes get ``<image>/mnt/data`` as a
read-write bind mount at their mount path (runc; CRIU treats it as an external mount, so
pause/resume, snapshots and forks bind the same volume again).

The content API authenticates with a volume token (HMAC-signed by a key in the data dir,
naming the team and the volume, valid ``SANDLOT_VOLUME_TOKEN_TTL_S``), as E2B's SDK
sends it; ``GET /volumes/{id}`` and create hand out fresh ones.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import json
import os
import posixpath
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from sandlot.orchestrator.errors import Conflict, InvalidRequest, OperationFailed, SandboxError
from sandlot.orchestrator.volume_files import Ids, VolumeTree
from sandlot.runtime import volume_disk
from sandlot.runtime.base import BindMount, SandboxRuntimeError
from sandlot.runtime.idmap import IdRange
from sandlot.secret_keys import data_dir_key
from sandlot.settings import Settings
from sandlot.store import volumes as volume_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox, Volume

log = structlog.get_logger("sandlot.volumes")

TOKEN_KEY_FILE = "volume-tokens.key"
TOKEN_PREFIX = "sl_vol1."
MOUNTED_STATES = frozenset({"creating", "running", "pausing", "resuming", "killing"})
"""States in which a sandbox's container may hold the volume's bind mount."""
RESERVED_PATHS = ("/proc", "/sys", "/dev", "/.sandlot", "/.sandlot-boot", "/etc/hosts", "/etc/hostname",
                  "/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt")
"""Mount paths that would hide what the runtime mounts (or lie on top of the kernel's trees)."""
MAX_MOUNTS = 16
DELETE_WAIT_S = 30.0
"""How long a volume delete waits for sandboxes whose kill is still tearing down."""


class VolumeNotFound(SandboxError):
    """No such volume for this team (or another team's): 404."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"Volume '{ref[:200]}' not found")


class VolumeTokenInvalid(SandboxError):
    """A missing, forged, expired or foreign volume token: 401."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_mount_path(path: str) -> str | None:
    """Why ``path`` can't be a mount path (``None``: it can): absolute, clean, not ``/``, and
    not over what the runtime mounts itself."""
    if not path or not path.startswith("/"):
        return "path must be absolute"
    if path == "/" or path != posixpath.normpath(path) or "//" in path or path.endswith("/") or "\0" in path:
        return "path must be clean (no '.', '..', '//' or trailing '/') and not '/'"
    if len(path) > 1024:
        return "path is too long"
    for reserved in RESERVED_PATHS:
        if path == reserved or path.startswith(reserved + "/"):
            return f"path must not be under {reserved}"
    return None


class Volumes:
    def __init__(self, settings: Settings, db: Database, userns: Callable[[], IdRange | None]) -> None:
        self.settings = settings
        self.db = db
        self.userns = userns
        """The sandboxes' id range (the runtime's; ``None`` without user namespaces)."""
        self._key: bytes | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._in_flight: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[bool]] = set()

    # --- paths and locks ------------------------------------------------------------------------

    def volume_dir(self, volume_id: str) -> Path:
        if not volume_store.valid_id(volume_id):   # never a path from anything but a UUID
            raise VolumeNotFound(volume_id)
        return self.settings.volumes_dir / volume_id

    def _lock(self, volume_id: str) -> asyncio.Lock:
        return self._locks.setdefault(volume_id, asyncio.Lock())

    def _root_ids(self) -> tuple[int, int]:
        rng = self.userns()
        return (rng.to_host(0), rng.to_host(0)) if rng else (0, 0)

    # --- CRUD -----------------------------------------------------------------------------------

    async def create(self, team_id: str, name: str) -> Volume:
        size = self.settings.volume_size_mb
        with self.db.session() as session, session.begin():
            try:
                row = volume_store.create(session, team_id, name, size, self.settings.volumes_per_team)
            except volume_store.InvalidVolume as exc:
                raise InvalidRequest(str(exc)) from None
            except volume_store.VolumeConflict as exc:
                raise InvalidRequest(str(exc)) from None   # E2B: 400 for a duplicate name
            session.expunge(row)
        self.settings.volumes_dir.mkdir(parents=True, exist_ok=True)
        self._open_to_sandboxes(self.settings.volumes_dir)
        try:
            await volume_disk.create(self.volume_dir(row.id), size, *self._root_ids())
        except BaseException as exc:
            with self.db.session() as session, session.begin():
                stored = session.get(Volume, row.id)
                if stored is not None:
                    session.delete(stored)
            if isinstance(exc, SandboxRuntimeError):
                raise OperationFailed(f"Failed to create volume '{name}': {exc}") from exc
            raise
        log.info("volume created", volume_id=row.id, size_mb=size)
        return row

    def _open_to_sandboxes(self, directory: Path) -> None:
        """``volumes_dir`` and its parent group-searchable by the sandboxes' root (runc binds as it)."""
        root_gid = self._root_ids()[1]
        for d in (directory.parent, directory):
            st = os.stat(d)
            if st.st_gid != root_gid or (st.st_mode & 0o7777) != 0o710:
                if st.st_uid == 0 and root_gid != 0:
                    os.chown(d, -1, root_gid)
                    os.chmod(d, 0o710)

    def list(self, team_id: str) -> builtins.list[Volume]:
        with self.db.session() as session:
            return volume_store.list_for_team(session, team_id)

    def get(self, team_id: str, volume_id: str) -> Volume:
        with self.db.session() as session:
            row = volume_store.find(session, team_id, volume_id)
        if row is None:
            raise VolumeNotFound(volume_id)
        return row

    async def delete(self, team_id: str, volume_id: str) -> None:
        """409 while a sandbox (running or paused: it mounts it again at resume) names it. Sandboxes
        being killed are waited for (a kill answers before its teardown ends; the SDK's
        ``kill(); Volume.destroy()`` must work), up to ``DELETE_WAIT_S``."""
        self.get(team_id, volume_id)
        deadline = time.monotonic() + DELETE_WAIT_S
        while True:
            async with self._lock(volume_id):
                with self.db.session() as session, session.begin():
                    row = volume_store.find(session, team_id, volume_id)
                    if row is None:
                        raise VolumeNotFound(volume_id)
                    users = volume_store.sandboxes_using(session, volume_id)
                    live = [s.id for s in users if s.state != "killing"]
                    if live:
                        raise Conflict(f"Volume '{row.name}' is mounted by sandbox {live[0]}"
                                       + (f" and {len(live) - 1} more" if len(live) > 1 else "")
                                       + ": kill those sandboxes first")
                    if self._in_flight.get(volume_id):
                        raise Conflict(f"Volume '{row.name}' has content requests in flight: retry")
                    if not users:
                        volume_store.delete(session, row)
                        break
                    name = row.name
            if time.monotonic() > deadline:
                raise Conflict(f"Volume '{name}' is still mounted by a sandbox being killed: retry")
            await asyncio.sleep(0.1)
        async with self._lock(volume_id):
            self._cancel_timer(volume_id)
            try:
                await volume_disk.remove(self.volume_dir(volume_id))
            except SandboxRuntimeError as exc:   # the row is gone; the files go at the next start
                log.error("volume files not removed", volume_id=volume_id, error=str(exc))
        self._locks.pop(volume_id, None)
        log.info("volume deleted", volume_id=volume_id)

    # --- tokens ---------------------------------------------------------------------------------

    def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = data_dir_key(self.settings.data_dir, TOKEN_KEY_FILE)
        return self._key

    def token(self, row: Volume) -> str:
        claims = {"vid": row.id, "tid": row.team_id, "exp": int(time.time()) + self.settings.volume_token_ttl_s}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self._signing_key(), body.encode(), hashlib.sha256).digest()
        return f"{TOKEN_PREFIX}{body}.{_b64(sig)}"

    def authorize(self, token: str | None, volume_id: str) -> Volume:
        """The volume a content request may touch: the token's own, still existing, same team."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 1024:
            raise VolumeTokenInvalid("Missing or invalid volume token: send it as 'Authorization: Bearer <token>'")
        body, _, sig = token[len(TOKEN_PREFIX):].partition(".")
        expected = hmac.new(self._signing_key(), body.encode(), hashlib.sha256).digest()
        try:
            valid = hmac.compare_digest(_unb64(sig), expected)
            claims = json.loads(_unb64(body)) if valid else {}
        except (ValueError, TypeError):
            valid, claims = False, {}
        if not valid or not isinstance(claims, dict):
            raise VolumeTokenInvalid("Invalid volume token")
        if int(claims.get("exp", 0)) < time.time():
            raise VolumeTokenInvalid("The volume token has expired: get a fresh one (Volume.connect)")
        if claims.get("vid") != volume_id:
            raise VolumeNotFound(volume_id)   # a token of another volume: as if it did not exist
        return self.get(str(claims.get("tid")), volume_id)

    # --- mounts for sandboxes -------------------------------------------------------------------

    def resolve_mounts(self, team_id: str, mounts: Iterable[dict[str, object]]) -> builtins.list[dict[str, str]]:
        """``volumeMounts`` of a create (``[{name, path}]``) as stored mounts (``volumeID`` added),
        with E2B's ``invalid mounts`` message listing every bad one."""
        wanted = list(mounts)
        problems: builtins.list[str] = []
        out: builtins.list[dict[str, str]] = []
        if len(wanted) > MAX_MOUNTS:
            raise InvalidRequest(f"invalid mounts: at most {MAX_MOUNTS} volume mounts per sandbox")
        seen: set[str] = set()
        with self.db.session() as session:
            for i, mount in enumerate(wanted):
                name, path = mount.get("name"), mount.get("path")
                if not isinstance(name, str) or not isinstance(path, str):
                    problems.append(f"volume mount #{i}: name and path must be strings")
                    continue
                reason = check_mount_path(path)
                if reason is None and path in seen:
                    reason = f"duplicate path {path}"
                row = volume_store.find_by_name(session, team_id, name)
                if reason is None and row is None:
                    reason = f"volume '{name[:128]}' not found"
                if reason is not None:
                    problems.append(f"volume mount #{i}: {reason}")
                    continue
                assert row is not None
                seen.add(path)
                out.append({"volumeID": row.id, "name": row.name, "path": path})
        if problems:
            raise InvalidRequest("invalid mounts:\n\t- " + "\n\t- ".join(problems))
        return out

    def bind_mounts(self, mounts: builtins.list[dict[str, str]] | None) -> builtins.list[BindMount]:
        return [BindMount(volume_disk.data_path(self.volume_dir(m["volumeID"])), m["path"],
                          read_only=m.get("readOnly") == "true")   # Prime's read_only mounts
                for m in mounts or []]

    async def acquire(self, mounts: builtins.list[dict[str, str]] | None) -> None:
        """Mount the volumes a sandbox is about to bind (before runc creates or restores it)."""
        for volume_id in sorted(volume_store.mounted_ids(mounts)):
            async with self._lock(volume_id):
                with self.db.session() as session:
                    if volume_store.get(session, volume_id) is None:
                        raise InvalidRequest(f"invalid mounts: volume {volume_id} no longer exists")
                self._cancel_timer(volume_id)
                try:
                    await volume_disk.mount(self.volume_dir(volume_id))
                except SandboxRuntimeError as exc:
                    raise OperationFailed(f"Failed to mount volume {volume_id}: {exc}") from exc

    def on_transition(self, row: Sandbox, old: str, new: str) -> None:
        """Lifecycle listener: a sandbox that left the mounted states may have been a volume's last user."""
        if row.volume_mounts and new not in MOUNTED_STATES:
            self.release_soon(volume_store.mounted_ids(row.volume_mounts), delay=0.0)

    def released_by(self, row: Sandbox) -> None:
        """A hot pause cooled into a checkpoint: its container (and binds) went without a state change."""
        if row.volume_mounts:
            self.release_soon(volume_store.mounted_ids(row.volume_mounts), delay=0.0)

    def release_soon(self, volume_ids: Iterable[str], delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:   # no server loop (a CLI's store work): the next start settles it
            return
        for volume_id in volume_ids:
            self._cancel_timer(volume_id)
            self._timers[volume_id] = loop.call_later(delay, self._spawn_release, volume_id)

    def _spawn_release(self, volume_id: str) -> None:
        self._timers.pop(volume_id, None)
        task = asyncio.ensure_future(self.release_if_unused(volume_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self, volume_id: str) -> None:
        timer = self._timers.pop(volume_id, None)
        if timer is not None:
            timer.cancel()

    def _in_use(self, volume_id: str) -> bool:
        if self._in_flight.get(volume_id):
            return True
        with self.db.session() as session:
            # a hot-paused sandbox's frozen container still holds its binds (``pausing.py``)
            return any(s.state in MOUNTED_STATES or (s.state == "paused" and s.pause_hot)
                       for s in volume_store.sandboxes_using(session, volume_id))

    async def release_if_unused(self, volume_id: str) -> bool:
        """Unmount the volume (and free its loop device) when nothing uses it; whether it is unmounted."""
        try:
            directory = self.volume_dir(volume_id)
        except VolumeNotFound:
            return True
        async with self._lock(volume_id):
            if self._in_use(volume_id):
                return False
            if not volume_disk.is_mounted(directory):
                return True
            done = await volume_disk.unmount(directory)
            if done:
                log.info("volume unmounted", volume_id=volume_id)
            else:   # e.g. a read still streaming: try again later
                log.warning("volume busy on the host; unmount retried later", volume_id=volume_id)
                self.release_soon([volume_id], delay=max(1.0, self.settings.volume_idle_unmount_s))
            return done

    async def recover(self) -> None:
        """At start-up: unmount volumes nothing uses any more, remove files of deleted volumes."""
        base = self.settings.volumes_dir
        if not base.is_dir():
            return
        with self.db.session() as session:
            known = {v.id for v in session.query(Volume).all()}
        for entry in base.iterdir():
            if not volume_store.valid_id(entry.name):
                continue
            if entry.name not in known:
                log.warning("removing files of a deleted volume", volume_id=entry.name)
                try:
                    await volume_disk.remove(entry)
                except SandboxRuntimeError as exc:
                    log.error("could not remove a deleted volume's files", volume_id=entry.name, error=str(exc))
                continue
            await self.release_if_unused(entry.name)

    async def close(self) -> None:
        """Stop timers; unmount what only the content API was using (sandboxes keep theirs)."""
        pending = list(self._timers)
        for volume_id in pending:
            self._cancel_timer(volume_id)
        for volume_id in pending:
            try:
                await self.release_if_unused(volume_id)
            except Exception:
                log.exception("volume unmount at shutdown failed", volume_id=volume_id)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- the content API ------------------------------------------------------------------------

    @asynccontextmanager
    async def content(self, volume: Volume) -> AsyncIterator[VolumeTree]:
        """The volume's tree, mounted for the duration (and a little after: the API's calls come in runs)."""
        volume_id = volume.id
        async with self._lock(volume_id):
            self._cancel_timer(volume_id)
            self._in_flight[volume_id] = self._in_flight.get(volume_id, 0) + 1
            try:
                await volume_disk.mount(self.volume_dir(volume_id))
            except BaseException as exc:
                self._in_flight[volume_id] -= 1
                if isinstance(exc, SandboxRuntimeError):
                    raise OperationFailed(f"Failed to mount volume '{volume.name}': {exc}") from exc
                raise
        try:
            tree = VolumeTree(volume_disk.data_path(self.volume_dir(volume_id)), Ids(self.userns()))
            try:
                yield tree
            finally:
                tree.close()
        finally:
            self._in_flight[volume_id] -= 1
            if not self._in_flight[volume_id]:
                del self._in_flight[volume_id]
                self.release_soon([volume_id], delay=self.settings.volume_idle_unmount_s)

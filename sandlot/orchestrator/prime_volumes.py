"""Prime's volumes: a named head that sandboxes copy privately and ``publish`` back.

Prime's model (``prime_sandboxes/volumes.py``): a sandbox created with a volume mounts a
private copy of the volume's head; ``publish`` makes that copy the new head (a checkpoint the
client waits for) and answers 409 when the head moved since the copy was taken (unless
``force``). On the engine's E2B volumes (``volumes.py``), as rows of other kinds:

- ``prime``: the named volume (no image); ``head_id`` is its current version, or none.
- ``prime-version``: a published head, an ext4 image copied (sparse) from a sandbox's copy
  while that copy's filesystem was frozen (``fsfreeze``), so the image is consistent.
- ``prime-copy``: one sandbox's copy (``sandbox_id``), taken from ``head_id`` (or a fresh,
  empty image), bound into the sandbox through the E2B machinery (acquire, bind, release).

Copies go when their sandbox is gone (:meth:`PrimeVolumes.reap`, run by every Prime volume
call and create); a superseded version goes at the publish that replaces it.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import structlog

from sandlot.orchestrator.errors import Conflict, InvalidRequest, OperationFailed
from sandlot.orchestrator.volumes import MAX_MOUNTS, MOUNTED_STATES, Volumes, VolumeNotFound, check_mount_path
from sandlot.runtime import volume_disk
from sandlot.runtime.base import SandboxRuntimeError
from sandlot.store import volumes as volume_store
from sqlalchemy.orm import Session

from sandlot.store.database import Database
from sandlot.store.models import PrimeSandbox, Sandbox, Volume

log = structlog.get_logger("sandlot.prime_volumes")

HEAD, VERSION, COPY = "prime", "prime-version", "prime-copy"
LIVE_STATES = MOUNTED_STATES | {"paused"}


class ReadOnlyMount(InvalidRequest):
    """Publishing a volume the sandbox mounts read-only: Prime's 400."""


class PublishNotAllowed(Conflict):
    """The head moved since the sandbox's copy was taken (or another publish is in flight): 409."""


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxRuntimeError(f"{os.path.basename(argv[0])} failed: {out.decode(errors='replace')[-500:]}")


class PrimeVolumes:
    """Prime volume operations over the engine's :class:`Volumes` (its paths, ids and locks)."""

    def __init__(self, volumes: Volumes) -> None:
        self.volumes = volumes
        self.db: Database = volumes.db
        self._publishing: set[str] = set()

    # --- CRUD -----------------------------------------------------------------------------------

    def create(self, team_id: str, name: str) -> Volume:
        per_team = self.volumes.settings.volumes_per_team
        with self.db.session() as session, session.begin():
            if not volume_store.NAME.match(name):
                raise InvalidRequest(f"Invalid volume name {name[:128]!r}: use letters, digits, '_' and '-' (1-128)")
            if session.query(Volume).filter(Volume.team_id == team_id, Volume.name == name).first() is not None:
                raise Conflict(f"Volume with name '{name}' already exists")
            if per_team > 0 and len(volume_store.list_for_team(session, team_id, HEAD)) >= per_team:
                raise Conflict(f"The team already has {per_team} volumes (the limit): delete one first")
            row = Volume(id=str(uuid.uuid4()), team_id=team_id, name=name, kind=HEAD,
                         size_mb=self.volumes.settings.volume_size_mb)
            session.add(row)
            session.flush()
            session.expunge(row)
        log.info("prime volume created", volume_id=row.id)
        return row

    def list(self, team_id: str) -> builtins.list[Volume]:
        with self.db.session() as session:
            return volume_store.list_for_team(session, team_id, HEAD)

    def get(self, team_id: str, name: str) -> Volume:
        with self.db.session() as session:
            row = volume_store.find_by_name(session, team_id, name, HEAD)
        if row is None:
            raise VolumeNotFound(name)
        return row

    def version(self, team_id: str, version_id: str) -> Volume | None:
        """A published version (a checkpoint to the client), by id, of this team."""
        with self.db.session() as session:
            return volume_store.find(session, team_id, version_id, VERSION)

    def occupied(self, row: Volume) -> int:
        """Bytes the head's image holds on the host (0 before the first publish)."""
        if not row.head_id:
            return 0
        try:
            st = os.stat(volume_disk.image_path(self.volumes.volume_dir(row.head_id)))
        except (OSError, VolumeNotFound):
            return 0
        return st.st_blocks * 512

    async def delete(self, team_id: str, name: str) -> None:
        """The volume and its head; 409 while a sandbox (running or still starting) has it attached,
        as the ``prime`` CLI says."""
        await self.reap()
        with self.db.session() as session, session.begin():
            row = volume_store.find_by_name(session, team_id, name, HEAD)
            if row is None:
                raise VolumeNotFound(name)
            users = [c.sandbox_id for c in session.query(Volume).filter(Volume.kind == COPY,
                                                                         Volume.prime_volume_id == row.id)
                     if self._attached(session, c)]
            if users:
                raise Conflict(f"Volume '{name}' is attached to sandbox {users[0]}"
                               + (f" and {len(users) - 1} more" if len(users) > 1 else "") + ": delete those first")
            versions = [v.id for v in session.query(Volume).filter(Volume.kind == VERSION,
                                                                    Volume.prime_volume_id == row.id)]
            session.query(Volume).filter(Volume.id.in_(versions)).delete(synchronize_session=False)
            session.delete(row)
        await self._remove_files(versions)
        log.info("prime volume deleted", volume_id=row.id)

    async def _remove_files(self, ids: Iterable[str]) -> None:
        for volume_id in ids:
            try:
                await volume_disk.remove(self.volumes.volume_dir(volume_id))
            except SandboxRuntimeError as exc:
                log.error("prime volume files not removed", volume_id=volume_id, error=str(exc))

    # --- copies for a sandbox -------------------------------------------------------------------

    def resolve(self, team_id: str, mounts: Iterable[dict[str, object]]) -> builtins.list[tuple[Volume, str, bool]]:
        """``volumes`` of a Prime create (``[{name, mount_path, read_only}]``): (volume, path, read-only)."""
        wanted = builtins.list(mounts)
        if len(wanted) > MAX_MOUNTS:
            raise InvalidRequest(f"At most {MAX_MOUNTS} volumes per sandbox")
        out: builtins.list[tuple[Volume, str, bool]] = []
        seen: set[str] = set()
        for i, mount in enumerate(wanted):
            name, path, read_only = mount.get("name"), mount.get("mount_path"), mount.get("read_only", False)
            if not isinstance(name, str) or not isinstance(path, str) or not isinstance(read_only, bool):
                raise InvalidRequest(f"volumes[{i}]: name and mount_path must be strings, read_only a boolean")
            reason = check_mount_path(path) or (f"duplicate mount_path {path}" if path in seen else None)
            if reason is not None:
                raise InvalidRequest(f"volumes[{i}]: {reason}")
            seen.add(path)
            out.append((self.get(team_id, name), path, read_only))
        return out

    async def make_copies(self, team_id: str, sandbox_id: str,
                          wanted: builtins.list[tuple[Volume, str, bool]]) -> builtins.list[dict[str, str]]:
        """A private copy of each volume's head for the sandbox: its ``volume_mounts``."""
        await self.reap()
        root_uid, root_gid = self._root_ids()
        self.volumes.settings.volumes_dir.mkdir(parents=True, exist_ok=True)
        mounts: builtins.list[dict[str, str]] = []
        made: builtins.list[str] = []
        try:
            for head, path, read_only in wanted:
                copy_id = str(uuid.uuid4())
                target = self.volumes.volume_dir(copy_id)
                with self.db.session() as session, session.begin():
                    fresh = session.get(Volume, head.id)
                    base = fresh.head_id if fresh is not None else None
                    session.add(Volume(id=copy_id, team_id=team_id, name=f"{COPY}:{copy_id}", kind=COPY,
                                       size_mb=head.size_mb, prime_volume_id=head.id, head_id=base,
                                       sandbox_id=sandbox_id))
                made.append(copy_id)
                if base is None:
                    await volume_disk.create(target, head.size_mb, root_uid, root_gid)
                else:
                    await self._copy_image(self.volumes.volume_dir(base), target)
                mounts.append({"volumeID": copy_id, "name": head.name, "path": path,
                               **({"readOnly": "true"} if read_only else {})})
        except BaseException as exc:
            await self._drop(made)
            if isinstance(exc, SandboxRuntimeError):
                raise OperationFailed(f"Failed to copy a volume: {exc}") from exc
            raise
        return mounts

    def _root_ids(self) -> tuple[int, int]:
        rng = self.volumes.userns()
        return (rng.to_host(0), rng.to_host(0)) if rng else (0, 0)

    async def _copy_image(self, source_dir: Path, target_dir: Path) -> None:
        """A sparse copy of an image Sandlot made (host paths only: UUID dirs under ``volumes_dir``)."""
        src, dst = Path(source_dir), Path(target_dir)
        dst.mkdir(mode=0o710)
        os.chown(dst, 0, self._root_ids()[1])
        os.chmod(dst, 0o710)
        await _run("/usr/bin/cp", "--sparse=always", "--reflink=auto", str(volume_disk.image_path(src)),
                   str(volume_disk.image_path(dst)))

    async def _drop(self, ids: builtins.list[str]) -> None:
        with self.db.session() as session, session.begin():
            session.query(Volume).filter(Volume.id.in_(ids)).delete(synchronize_session=False)
        await self._remove_files(ids)

    @staticmethod
    def _attached(session: Session, copy: Volume) -> bool:
        """Whether the copy's sandbox is starting or alive (one being killed no longer counts)."""
        sandbox = session.get(Sandbox, copy.sandbox_id) if copy.sandbox_id else None
        if sandbox is not None:
            return sandbox.state in LIVE_STATES and sandbox.state != "killing"
        prime = session.get(PrimeSandbox, copy.sandbox_id) if copy.sandbox_id else None
        return prime is not None and prime.status == "PENDING"

    async def reap(self) -> None:
        """Remove copies whose sandbox is gone (not live in the engine, not still launching)."""
        with self.db.session() as session:
            copies = session.query(Volume).filter(Volume.kind == COPY).all()
            dead: builtins.list[str] = []
            for copy in copies:
                sandbox = session.get(Sandbox, copy.sandbox_id) if copy.sandbox_id else None
                if sandbox is not None and sandbox.state in LIVE_STATES:
                    continue
                prime = session.get(PrimeSandbox, copy.sandbox_id) if copy.sandbox_id else None
                if prime is not None and prime.status == "PENDING":
                    continue
                if volume_disk.is_mounted(self.volumes.volume_dir(copy.id)):
                    if not await self.volumes.release_if_unused(copy.id):
                        continue
                dead.append(copy.id)
        if dead:
            await self._drop(dead)

    # --- publish --------------------------------------------------------------------------------

    async def publish(self, team_id: str, sandbox_id: str, name: str, force: bool) -> Volume:
        """The sandbox's copy becomes the head: a new version (frozen, then copied); its row."""
        with self.db.session() as session:
            head = volume_store.find_by_name(session, team_id, name, HEAD)
            sandbox = session.get(Sandbox, sandbox_id)
            copy = session.query(Volume).filter(Volume.kind == COPY, Volume.sandbox_id == sandbox_id,
                                                Volume.prime_volume_id == (head.id if head else "")).first()
            if head is None or sandbox is None or sandbox.team_id != team_id or copy is None:
                raise VolumeNotFound(name)
            mount = next((m for m in sandbox.volume_mounts or [] if m.get("volumeID") == copy.id), None)
        if sandbox.state != "running" or mount is None:
            raise Conflict(f"Sandbox {sandbox_id} is {sandbox.state}: only a running sandbox can publish")
        if mount.get("readOnly"):
            raise ReadOnlyMount(f"Volume '{name}' is mounted read-only in sandbox {sandbox_id}")
        if head.id in self._publishing:
            raise PublishNotAllowed(f"Another publish of volume '{name}' is in flight: retry")
        self._publishing.add(head.id)
        version_id = str(uuid.uuid4())
        try:
            if head.head_id != copy.head_id and not force:
                raise PublishNotAllowed(f"Volume '{name}' has a newer head ({head.head_id}) than sandbox "
                                        f"{sandbox_id} mounted ({copy.head_id}): publish with force=True to replace it")
            copy_dir, target = self.volumes.volume_dir(copy.id), self.volumes.volume_dir(version_id)
            frozen = volume_disk.mount_path(copy_dir)
            if not volume_disk.is_mounted(copy_dir):
                raise OperationFailed(f"Sandbox {sandbox_id}'s copy of volume '{name}' is not mounted on the host")
            try:   # frozen: the image on disk is a consistent, clean ext4 while it is copied
                await _run("/usr/sbin/fsfreeze", "--freeze", str(frozen))
                try:
                    await self._copy_image(copy_dir, target)
                finally:
                    await _run("/usr/sbin/fsfreeze", "--unfreeze", str(frozen))
            except SandboxRuntimeError as exc:
                raise OperationFailed(f"Failed to publish volume '{name}': {exc}") from exc
            with self.db.session() as session, session.begin():
                fresh = session.get(Volume, head.id)
                if fresh is None:
                    raise VolumeNotFound(name)
                old = fresh.head_id
                session.add(Volume(id=version_id, team_id=team_id, name=f"{VERSION}:{version_id}", kind=VERSION,
                                   size_mb=head.size_mb, prime_volume_id=head.id, sandbox_id=sandbox_id))
                fresh.head_id = version_id
                stored_copy = session.get(Volume, copy.id)
                if stored_copy is not None:
                    stored_copy.head_id = version_id
                if old:
                    session.query(Volume).filter(Volume.id == old).delete(synchronize_session=False)
            if old:
                await self._remove_files([old])
            with self.db.session() as session:
                row = session.get(Volume, version_id)
                assert row is not None
                session.expunge(row)
        except BaseException:
            if not self.version(team_id, version_id):
                await self._remove_files([version_id])
            raise
        finally:
            self._publishing.discard(head.id)
        log.info("prime volume published", volume_id=head.id, version_id=version_id, sandbox_id=sandbox_id)
        return row

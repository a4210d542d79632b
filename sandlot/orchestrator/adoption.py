"""Paused sandboxes across nodes (``sandlot node``, issue 17): publish each pause, adopt another node's.

After a pause completes, :meth:`Adoption.publish` packs what a resume needs (the runtime's
``export_paused``: pause files, memory image if any, boot id, disk upper dir) into one tree in
the blob store and records ``{"digest", "node", "memory", "pausedAt"}`` on the row. When this
node is asked to resume (API resume, ``connect``, the front door's auto-resume: all go through
``Pauser.resume``) a paused sandbox whose ``node_id`` is another node, :meth:`Adoption.adopt`
runs first under the sandbox's lock: it fetches the build's layers and the tree (digests
verified, tar validated), has the runtime make it a paused sandbox of this host (a new address),
then moves the row's ``node_id`` here with one conditional UPDATE; the resume then proceeds as
for any pause. The Lifecycle stays the only writer of ``state``.

An image is only used when it is of the row's current pause (``pausedAt``): a pause whose
publishing failed or was cut short by a crash leaves the sandbox resumable only on its node.
Volumes and snapshots stay on their node, so a sandbox with volumes is not adopted.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from datetime import datetime
from typing import Any

import structlog

from sandlot import blobstore, blobtree
from sandlot.orchestrator.boot import Boot
from sandlot.orchestrator.errors import Conflict, OperationFailed
from sandlot.orchestrator.lifecycle import PAUSED
from sandlot.orchestrator.network import NetworkPolicies
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store import pause_images
from sandlot.store.database import Database
from sandlot.store.models import Build, Sandbox

log = structlog.get_logger("sandlot.adoption")


def _stamp(paused_at: datetime | None) -> str | None:
    return paused_at.isoformat() if paused_at is not None else None


class Adoption:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, boot: Boot, network: NetworkPolicies,
                 node_id: str) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.boot = boot
        self.network = network
        self.node_id = node_id
        self.staging = settings.data_dir / "adopting" / settings.instance
        """Fetched trees, on the data dir's filesystem (the memory image is moved, not copied)."""
        self._store: blobstore.BlobStore | None = None

    @property
    def store(self) -> blobstore.BlobStore:
        if self._store is None:
            self._store = blobstore.open_store(self.settings.effective_blob_url)
        return self._store

    # --- this node paused it ------------------------------------------------------------------

    async def publish(self, sandbox_id: str, memory: bool) -> None:
        """Called under the sandbox's lock once it is paused. A failure is logged, never raised: the
        sandbox stays paused and resumable here (the row then has no image: not on other nodes)."""
        t0 = time.perf_counter()
        image: dict[str, Any] | None = None
        try:
            with self.db.session() as session:
                row = session.get(Sandbox, sandbox_id)
                paused_at = _stamp(row.paused_at) if row is not None else None
            parts = self.runtime.export_paused(sandbox_id)
            digest = await asyncio.to_thread(blobtree.publish, self.store, parts, self.staging / "scratch")
            image = {"digest": digest, "node": self.node_id, "memory": memory, "pausedAt": paused_at}
        except Exception as exc:
            log.error("publishing the pause image failed: the sandbox can only be resumed on this node",
                      sandbox_id=sandbox_id, error=str(exc)[:500])
        with self.db.session() as session, session.begin():
            pause_images.set_image(session, sandbox_id, image)
        if image is not None:
            log.info("pause image published", sandbox_id=sandbox_id, digest=image["digest"][:16], memory=memory,
                     ms=round((time.perf_counter() - t0) * 1000, 1))

    # --- another node paused it -----------------------------------------------------------------

    async def adopt(self, row: Sandbox) -> None:
        """Make a paused sandbox of another node this node's (module docstring); a no-op for
        one that is this node's (or not paused). :class:`Conflict` when it can't move."""
        if row.state != PAUSED or row.node_id in (None, self.node_id):
            return
        image = row.pause_image or {}
        if not image.get("digest") or image.get("pausedAt") != _stamp(row.paused_at):
            raise Conflict(f"Sandbox \"{row.id}\" is paused on node {row.node_id} and its pause image is not in the "
                           "blob store; it can only be resumed on that node")
        if row.volume_mounts:
            raise Conflict(f"Sandbox \"{row.id}\" is paused on node {row.node_id} with volumes mounted; volumes "
                           "stay on their node, so it can only be resumed there")
        with self.db.session() as session:
            build = session.get(Build, row.build_id)
        if build is None:
            raise OperationFailed(f"the build of sandbox {row.id} is gone")
        t0 = time.perf_counter()
        if row.id in self.runtime.paused_ids():   # this node's copy from before another node adopted it
            await self.runtime.kill(row.id)
        layers = await self.boot.ensure_layers(build)
        policy = self.network.policy(row.allow_internet_access, row.network)
        staging = self.staging / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            await asyncio.to_thread(blobtree.fetch, self.store, str(image["digest"]), staging / "bundle")
            mounts = self.boot.spec(row, build).mounts   # this node's envd runtime, CA bundle, lxcfs views
            await self.runtime.adopt_paused(staging / "bundle", row.id, layers, mounts=mounts, egress=policy)
        except blobstore.BlobError as exc:
            raise OperationFailed(f"Sandbox \"{row.id}\"'s pause image could not be fetched from the blob store: "
                                  f"{exc}. It stays paused") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        with self.db.session() as session, session.begin():
            won = pause_images.claim(session, row.id, row.node_id, self.node_id)
        if not won:
            await self.runtime.kill(row.id)
            raise Conflict(f"Sandbox \"{row.id}\" was moved or killed by another node meanwhile")
        log.warning("adopted a paused sandbox from another node", sandbox_id=row.id, from_node=row.node_id,
                    memory=bool(image.get("memory")), ms=round((time.perf_counter() - t0) * 1000, 1))

"""Snapshots across nodes (``sandlot node``, issue 17): published when taken, fetched where started.

A snapshot (its disk's upper dir, its memory image, its OCI config) lies on the node that took
it. Under ``sandlot node`` :meth:`SnapshotImages.publish` puts the snapshot dir into the blob
store as one tree and records ``{"digest", "node"}`` on the row, so a sandbox can start from it on
any node — E2B starts snapshots anywhere, and the taking node may be gone. A node starting a
snapshot it does not hold fetches the tree (digest verified, tar validated: ``blobtree``) into
``<snapshots>/<id>-<digest>``, fetches the build's layers, and points the copy at this host: the
layer paths in ``snapshot.json`` and the bind sources in ``config.json`` (envd runtime, CA bundle,
lxcfs views) become this node's, as an adopted pause's do. The copy is a cache: start-up removes
snapshot dirs no row names (``Snapshots.remove_orphans``), so it is fetched again when needed.

``sandlot serve`` publishes and fetches nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path

import structlog

from sandlot import blobstore, blobtree
from sandlot.orchestrator.boot import Boot
from sandlot.orchestrator.errors import Conflict, OperationFailed
from sandlot.settings import Settings
from sandlot.store.database import Database
from sandlot.store.models import Build, Snapshot

log = structlog.get_logger("sandlot.snapshot_images")


class SnapshotImages:
    def __init__(self, settings: Settings, db: Database, boot: Boot, node_id: str) -> None:
        self.enabled = settings.role == "node"
        self.settings = settings
        self.db = db
        self.boot = boot
        self.node_id = node_id
        self.scratch = settings.data_dir / "adopting" / settings.instance / "snapshot-scratch"
        self._store: blobstore.BlobStore | None = None
        self._fetching: dict[str, asyncio.Task[Path]] = {}

    @property
    def store(self) -> blobstore.BlobStore:
        if self._store is None:
            self._store = blobstore.open_store(self.settings.effective_blob_url)
        return self._store

    async def publish(self, snap: Snapshot) -> None:
        """Put a snapshot this node just took into the blob store. A failure is logged, never
        raised: the snapshot stays usable on this node."""
        if not self.enabled:
            return
        t0 = time.perf_counter()
        try:
            digest = await asyncio.to_thread(blobtree.publish, self.store, Path(snap.path), self.scratch)
        except Exception as exc:
            log.error("publishing the snapshot failed: it can only be started on this node",
                      snapshot_id=snap.id, error=str(exc)[:500])
            return
        with self.db.session() as session, session.begin():
            row = session.get(Snapshot, snap.id)
            if row is not None and row.path == snap.path:   # (not replaced by a newer one of the same name)
                row.image = {"digest": digest, "node": self.node_id}
        log.info("snapshot published", snapshot_id=snap.id, digest=digest[:16],
                 ms=round((time.perf_counter() - t0) * 1000, 1))

    async def local_path(self, snap: Snapshot) -> Path:
        """The snapshot's dir on this node: its own, or a copy fetched from the blob store."""
        path = Path(snap.path)
        if not self.enabled or (snap.node_id in (None, self.node_id) and path.is_dir()):
            return path
        digest = str((snap.image or {}).get("digest") or "")
        if not digest:
            raise Conflict(f"Snapshot \"{snap.id}\" is on node {snap.node_id} and not in the blob store; "
                           "it can only be started there")
        task = self._fetching.get(digest)
        if task is None:   # one fetch per image at a time; concurrent starts wait for it
            task = asyncio.ensure_future(self._fetch(snap, digest))
            self._fetching[digest] = task
            task.add_done_callback(lambda _t: self._fetching.pop(digest, None))
        return await asyncio.shield(task)

    async def _fetch(self, snap: Snapshot, digest: str) -> Path:
        dest = self.settings.snapshots_dir / f"{snap.id}-{digest[:16]}"
        if dest.is_dir():
            return dest
        with self.db.session() as session:
            build = session.get(Build, snap.build_id)
        if build is None:
            raise OperationFailed(f"the template build of snapshot {snap.id} is gone")
        layers = await self.boot.ensure_layers(build)
        mounts = self.boot.spec(self.boot.warm_row(snap.id, build), build).mounts
        t0 = time.perf_counter()
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
        try:
            await asyncio.to_thread(blobtree.fetch, self.store, digest, tmp)
            meta = json.loads((tmp / "snapshot.json").read_text())
            meta["layers"] = [str(p) for p in layers]
            (tmp / "snapshot.json").write_text(json.dumps(meta))
            cfg = json.loads((tmp / "config.json").read_text())
            sources = {m.destination: str(m.source) for m in mounts}
            for entry in cfg.get("mounts", []):
                bind = {entry.get("type"), *entry.get("options", [])} & {"bind", "rbind"}
                if bind and entry.get("destination") in sources:
                    entry["source"] = sources[entry["destination"]]
            (tmp / "config.json").write_text(json.dumps(cfg))
            tmp.rename(dest)
        except blobstore.BlobError as exc:
            raise OperationFailed(f"Snapshot \"{snap.id}\" could not be fetched from the blob store: {exc}") from exc
        finally:
            if tmp.exists():
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        log.info("snapshot fetched from the blob store", snapshot_id=snap.id, from_node=snap.node_id,
                 ms=round((time.perf_counter() - t0) * 1000, 1))
        return dest

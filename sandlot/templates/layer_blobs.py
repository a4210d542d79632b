"""A build's layers on whichever node starts its sandboxes (``sandlot node``, issue 17).

``builds.layers`` holds the building node's host paths. Under ``sandlot node`` a finished
build publishes every layer but the shared ``base`` rootfs (the install, under the images dir: it is
the same path on every node) to the blob store and records ``[{"path", "digest"}]`` in
``builds.layer_blobs``. A node that must start a sandbox of the build (create, warm pool,
post-ready boot, a build ``FROM`` the template, an adopted pause) maps each path it does not
hold itself — one outside its own templates dir and the base rootfs, or in them but missing (nodes may
all use one data dir path) — to ``<templates>/fetched/<digest>``
and fetches it there first (digest verified, tar validated: ``blobtree``). Paths of other
nodes are never used even when visible (a local cluster shares one filesystem): what they
hold is another node's, and its gc may take it.

On a single box (``sandlot serve``) this is a no-op: paths are used as recorded and nothing is
published, so ``serve`` pays nothing.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from sandlot import blobstore, blobtree
from sandlot.settings import Settings
from sandlot.store.models import Build

log = structlog.get_logger("sandlot.layer_blobs")

DIR_CHARS = 40
"""Digest prefix used in paths: short lowerdir paths let more layers fit in one overlay mount."""


class LayerUnavailable(Exception):
    """A build's layer is neither on this node nor in the blob store."""


class LayerBlobs:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.role == "node"
        self.url = settings.effective_blob_url
        self.templates_dir = settings.templates_dir
        self.base_dir = settings.base_dir
        """The install's ``base`` rootfs (``<images>/templates/base``): the same path on every node."""
        self.cache = settings.templates_dir / "fetched"
        self.scratch = settings.templates_dir / "layers" / ".staging" / f"{settings.instance}-publish"
        self._store: blobstore.BlobStore | None = None
        self._fetching: dict[str, asyncio.Task[None]] = {}

    @property
    def store(self) -> blobstore.BlobStore:
        if self._store is None:
            self._store = blobstore.open_store(self.url)
        return self._store

    def _shared(self, path: Path) -> bool:
        return path.is_relative_to(self.base_dir)

    def _own(self, path: Path) -> bool:
        return path.is_relative_to(self.templates_dir) or self._shared(path)

    def _cached(self, digest: str) -> Path:
        return self.cache / digest[:DIR_CHARS]

    # --- where a build's layers are on this node ----------------------------------------------

    def paths(self, build: Build) -> list[Path]:
        """This node's paths of the build's layers (those not fetched yet: where they will be)."""
        if not self.enabled:
            return [Path(p) for p in build.layers]
        digests = {b["path"]: b["digest"] for b in build.layer_blobs or []}
        out = []
        for p in build.layers:
            path = Path(p)
            digest = digests.get(p)
            # nodes may all use one data dir path (deploy/): a path of this node's own dirs that this
            # node lacks is another node's layer, fetched like any other
            here = self._own(path) and (digest is None or path.is_dir())
            out.append(path if here or digest is None else self._cached(digest))
        return out

    async def ensure(self, build: Build) -> list[Path]:
        """Fetch what :meth:`paths` names but this node lacks; the paths.
        :class:`LayerUnavailable` when a layer is neither here nor published."""
        paths = self.paths(build)
        if not self.enabled:
            return paths
        digests = {b["path"]: b["digest"] for b in build.layer_blobs or []}
        for original, path in zip(build.layers, paths, strict=True):
            if path.is_dir():
                continue
            digest = digests.get(original)
            if digest is None:
                where = "the shared base rootfs (SANDLOT_IMAGES_DIR)" if self._shared(path) else "this node"
                raise LayerUnavailable(f"layer {original} of build {build.id} is not in {where} and was not "
                                       "published to the blob store (built before the node role); rebuild the template")
            await self._fetch(digest)
        return paths

    async def _fetch(self, digest: str) -> None:
        """One fetch per digest at a time; concurrent callers wait for it."""
        task = self._fetching.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._fetch_once(digest))
            self._fetching[digest] = task
            task.add_done_callback(lambda _t: self._fetching.pop(digest, None))
        await asyncio.shield(task)

    async def _fetch_once(self, digest: str) -> None:
        dest = self._cached(digest)
        if dest.is_dir():
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        log.info("fetching layer from the blob store", digest=digest[:16])
        try:
            await asyncio.to_thread(blobtree.fetch, self.store, digest, dest)
        except OSError:
            if not dest.is_dir():   # (else: another process of this node fetched it first)
                raise
        (self.cache / f"{dest.name}.digest").write_text(digest)

    # --- after a build --------------------------------------------------------------------------

    async def publish(self, layers: list[Path]) -> list[dict[str, str]] | None:
        """Put each layer but the shared base rootfs in the blob store; ``builds.layer_blobs``
        (``None`` on a single box)."""
        if not self.enabled:
            return None
        out = []
        for path in layers:
            if self._shared(path):
                continue
            digest = self._known_digest(path)
            if digest is None:
                digest = await asyncio.to_thread(blobtree.publish, self.store, path, self.scratch)
            out.append({"path": str(path), "digest": digest})
        return out

    def _known_digest(self, path: Path) -> str | None:
        """A layer this node fetched is in the store already, under the digest it came by."""
        if path.parent != self.cache:
            return None
        try:
            digest = (self.cache / f"{path.name}.digest").read_text().strip()
        except OSError:
            return None
        return digest if blobstore.DIGEST.match(digest) and os.path.isdir(path) else None

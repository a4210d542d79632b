"""Content-keyed cache of build layers: ``<templates>/layers/<key>/{fs/, meta.json}``.

A layer is an overlayfs upper dir captured after one build step, kept as-is
(whiteouts = 0:0 char devices, ``trusted.overlay.opaque`` xattrs) because it is
used again as a lower layer. Layers are immutable once committed: a forced
rebuild makes a new key instead of overwriting, so running sandboxes never see
their lower layers change. ``sandlot template gc`` deletes unused ones (``gc.py``):
a cache hit marks the layer as used, and a layer gc took is a miss, so it is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandlot import tenant_fs
from sandlot.templates import gc

KEY_CHARS = 40
"""Key prefix used in paths: short paths let more layers fit in one overlay mount."""

RUNTIME_ARTIFACTS = ("etc/resolv.conf", "etc/hosts", "etc/hostname")
"""Written by the runtime into every sandbox's upper dir; sandboxes get fresh ones anyway."""
MOUNTPOINTS = (".sandlot", ".sandlot-context")


@dataclass(frozen=True)
class Layer:
    key: str
    fs: Path | None
    """``None`` when the step changed no file (ENV, or a RUN without effects)."""


class LayerStore:
    def __init__(self, root: Path, instance: str) -> None:
        self.root = root
        self.staging_root = root / ".staging" / instance

    def start(self) -> None:
        """Drop staging dirs a crashed build of this instance left behind."""
        shutil.rmtree(self.staging_root, ignore_errors=True)
        self.staging_root.mkdir(parents=True, exist_ok=True)

    def _dir(self, key: str) -> Path:
        return self.root / key[:KEY_CHARS]

    def lookup(self, key: str) -> Layer | None:
        meta_file = self._dir(key) / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key:
            return None
        if not gc.keep_alive(self._dir(key), "layers"):  # gc took it meanwhile
            return None
        fs = self._dir(key) / "fs"
        return Layer(key, fs if meta.get("hasFiles") else None)

    def staging(self) -> Path:
        """A fresh path (not created) on the layers' filesystem to move an upper dir to."""
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return self.staging_root / uuid.uuid4().hex

    def commit(self, key: str, upper: Path | None, meta: dict[str, Any]) -> Layer:
        """Store ``upper`` (cleaned of runtime artifacts) as the layer for ``key``."""
        existing = self.lookup(key)
        if existing is not None:  # a concurrent identical build won the race
            if upper is not None:
                shutil.rmtree(upper, ignore_errors=True)
            return existing
        has_files = upper is not None and _clean(upper)
        tmp = self.staging()
        tmp.mkdir()
        if has_files:
            assert upper is not None
            os.rename(upper, tmp / "fs")
        elif upper is not None:
            shutil.rmtree(upper, ignore_errors=True)
        (tmp / "meta.json").write_text(json.dumps({**meta, "key": key, "hasFiles": has_files, "createdAt": time.time()}))
        try:
            os.rename(tmp, self._dir(key))
        except OSError:  # lost a race: keep the winner's layer
            shutil.rmtree(tmp, ignore_errors=True)
        layer = self.lookup(key)
        if layer is None:
            raise RuntimeError(f"layer {key[:12]} could not be stored")
        return layer


def _clean(upper: Path) -> bool:
    """Remove what the runtime (not the step) put in the upper dir; True if anything is left.
    The step shaped this tree, so names are taken literally through :mod:`sandlot.tenant_fs`
    (a step that made ``/etc`` a symlink to a host path can't make us delete there)."""
    with tenant_fs.Tree(upper, follow=False) as tree:
        for rel in RUNTIME_ARTIFACTS:
            tree.remove(rel)  # whiteouts and symlinks too, never their targets
        ca = "etc/ssl/certs/ca-certificates.crt"
        try:
            st = tree.lstat(ca)
        except (OSError, tenant_fs.TreeError):
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:  # bind-mount target made by runc
            tree.remove(ca)
            tree.rmdir_if_empty("etc/ssl/certs")
            tree.rmdir_if_empty("etc/ssl")
        for name in (*MOUNTPOINTS, "etc"):
            tree.rmdir_if_empty(name)
    return any(upper.iterdir())

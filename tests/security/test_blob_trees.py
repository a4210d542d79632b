"""Trees fetched from the blob store (issue 17) cannot write outside their destination.

The blob store may be shared storage that others write, and a tree's content was shaped
by a tenant (a layer, a paused sandbox's disk). An attacker who can write the store can
also give an object the right digest, so the digest check alone does not make a tar safe:
these tars are stored *with correct digests* and each must be refused before extraction,
with a canary on the host untouched and no partial tree left behind."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sandlot import blobstore, blobtree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction as root is what is attacked")


def _tar(path: Path, build: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return path


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"pwned\n") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o4755
    tar.addfile(info, io.BytesIO(data))


def _entry(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "", dev: tuple[int, int] = (0, 0)) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = dev
    tar.addfile(info)


ATTACKS: dict[str, Callable[[Path], Callable[[tarfile.TarFile], None]]] = {
    "absolute member": lambda canary: lambda t: _file(t, str(canary)),
    "dot-dot member": lambda canary: lambda t: _file(t, "../" * 12 + str(canary).lstrip("/")),
    "write through a symlink": lambda canary: lambda t: (
        _entry(t, "esc", tarfile.SYMTYPE, str(canary.parent)), _file(t, f"esc/{canary.name}")),
    "write through a relative symlink": lambda canary: lambda t: (
        _entry(t, "up", tarfile.SYMTYPE, "../" * 12), _file(t, "up" + str(canary))),
    "directory through a symlink": lambda canary: lambda t: (
        _entry(t, "esc", tarfile.SYMTYPE, str(canary.parent)), _entry(t, "esc/newdir", tarfile.DIRTYPE)),
    "hard link to a host file": lambda canary: lambda t: (
        _entry(t, "h", tarfile.LNKTYPE, str(canary)), _file(t, "h")),
    "hard link out by dot-dot": lambda canary: lambda t: (
        _entry(t, "h", tarfile.LNKTYPE, "../" * 12 + str(canary).lstrip("/"))),
    "hard link through a symlink": lambda canary: lambda t: (
        _entry(t, "esc", tarfile.SYMTYPE, str(canary.parent)),
        _entry(t, "h", tarfile.LNKTYPE, f"esc/{canary.name}")),
    "device node": lambda canary: lambda t: _entry(t, "mem", tarfile.CHRTYPE, dev=(1, 1)),
    "block device": lambda canary: lambda t: _entry(t, "sda", tarfile.BLKTYPE, dev=(8, 0)),
    "fifo": lambda canary: lambda t: _entry(t, "pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_tree_is_refused(attack: str, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    canary = host / "canary"
    canary.write_text("original\n")
    before = sorted(os.listdir(host))
    store = blobstore.open_store(f"file://{tmp_path / 'blobs'}")
    digest = store.put_file(_tar(tmp_path / "evil.tar", ATTACKS[attack](canary)))   # a correct digest
    nodes = tmp_path / "node"
    nodes.mkdir()
    with pytest.raises(blobtree.UnsafeTree):
        blobtree.fetch(store, digest, nodes / "layer")
    assert canary.read_text() == "original\n"
    assert os.stat(canary).st_nlink == 1
    assert sorted(os.listdir(host)) == before
    assert os.listdir(nodes) == []   # no partial tree, no temp tar


def test_legitimate_tree_next_to_the_attacks(tmp_path: Path) -> None:
    """Internal symlinks (absolute targets included) and whiteouts are what layers hold: kept."""
    store = blobstore.open_store(f"file://{tmp_path / 'blobs'}")

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "etc", tarfile.DIRTYPE)
        _file(t, "etc/real")
        _entry(t, "etc/link", tarfile.SYMTYPE, "/etc/real")
        _entry(t, "etc/hard", tarfile.LNKTYPE, "etc/real")
        _entry(t, "etc/whiteout", tarfile.CHRTYPE)

    digest = store.put_file(_tar(tmp_path / "ok.tar", build))
    blobtree.fetch(store, digest, tmp_path / "layer")
    assert os.readlink(tmp_path / "layer" / "etc" / "link") == "/etc/real"
    assert (tmp_path / "layer" / "etc" / "hard").read_text() == "pwned\n"


def test_a_tree_that_would_be_refused_is_not_published(tmp_path: Path) -> None:
    """A tenant can make a fifo on its own disk: such a tree is refused when packed (a clear error
    on the publishing node), not stored to fail on another node."""
    src = tmp_path / "upper"
    src.mkdir()
    os.mkfifo(src / "pipe")
    store = blobstore.open_store(f"file://{tmp_path / 'blobs'}")
    with pytest.raises(blobtree.UnsafeTree):
        blobtree.publish(store, src, tmp_path / "scratch")
    assert not (tmp_path / "blobs" / "sha256").exists() or not os.listdir(tmp_path / "blobs" / "sha256")

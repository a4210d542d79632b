"""The envd runtime's app dir carries the spawn helper, built static, where envd looks for it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sandlot.envd import spawn
from sandlot.runtime import envd_bundle


def test_app_dir_has_a_static_spawn_helper_next_to_spawn_py(tmp_path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler (make deps installs gcc)")
    envd_bundle.refresh_envd_app(tmp_path)
    helper = envd_bundle.app_dir(tmp_path) / "sandlot" / "envd" / spawn.HELPER_NAME
    assert envd_bundle.SPAWN_HELPER_NAME == spawn.HELPER_NAME
    assert helper.is_file() and helper.stat().st_mode & 0o111
    ldd = subprocess.run(["ldd", str(helper)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr   # runs on any rootfs, needs no loader
    usage = subprocess.run([str(helper)], capture_output=True)
    assert usage.returncode == 127   # no error pipe, no arguments: refuses, runs nothing

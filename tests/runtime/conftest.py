"""Fixtures for runtime tests: real containers, so root is required.

Built artifacts (base rootfs ~70 s: mmdebstrap and Node; envd runtime ~15 s; busybox rootfs)
are cached under ``$SANDLOT_TEST_DATA`` when it is set, else in the data dir's ``test-cache``
(``SANDLOT_DATA_DIR`` or the settings' default), so that a clean clone (CI's) reuses them instead
of building them again; the base's dir is named by its recipe id, so a changed recipe builds anew
(the envd runtime refreshes its app copy and deps itself). Runtime state stays under
``$SANDLOT_TEST_DATA`` (default ``<repo>/.data/test``).
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from sandlot.runtime.base import set_child_subreaper
from sandlot.runtime.runc import RuncRuntime
from tests.e2e.server import data_dir

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = Path(os.environ.get("SANDLOT_TEST_DATA", REPO / ".data" / "test"))
BUILT = TEST_DATA if "SANDLOT_TEST_DATA" in os.environ else data_dir() / "test-cache"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runtime tests need root")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="runtime tests need root")
        for it in items:
            if "tests/runtime" in str(it.fspath):
                it.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _subreaper():
    set_child_subreaper()


@pytest.fixture(scope="session")
def base_rootfs() -> Path:
    from sandlot.templates.base import build_base_rootfs, recipe_id
    return build_base_rootfs(BUILT / "templates" / "base" / recipe_id() / "rootfs", progress=print)


@pytest.fixture(scope="session")
def envd_runtime() -> Path:
    from sandlot.runtime.envd_bundle import build_envd_runtime
    return build_envd_runtime(BUILT / "envd" / "runtime", progress=print)


@pytest.fixture(scope="session")
def busybox_rootfs() -> Path:
    """A rootfs with nothing but a static busybox (no libc, no python)."""
    dest = BUILT / "templates" / "busybox" / "rootfs"
    if (dest / ".ok").exists():
        return dest
    if not Path("/bin/busybox").exists() or not _is_static("/bin/busybox"):
        subprocess.run(["apt-get", "install", "-y", "busybox-static"], check=True,
                       stdout=subprocess.DEVNULL)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    os.chmod(tmp / "tmp", 0o1777)
    shutil.copy2("/bin/busybox", tmp / "bin" / "busybox")
    subprocess.run(["chroot", str(tmp), "/bin/busybox", "--install", "-s"], check=True)
    (tmp / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp / "etc" / "group").write_text("root:x:0:\n")
    (tmp / ".ok").touch()
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


def _is_static(path: str) -> bool:
    # a static binary has no PT_INTERP, so no "ld-linux" near its start
    return b"ld-linux" not in Path(path).read_bytes()[:65536]


def new_id() -> str:
    return secrets.token_hex(16)[:21]


@pytest.fixture
async def runtime():
    data = TEST_DATA / "rt"
    rt = RuncRuntime(data, "/run/sandlot-test", pool_size=2, subnet="10.214.0.0/16",
                     net_prefix="slt", nft_table="sandlot_test")
    await rt.start()
    yield rt
    await rt.kill_all()
    await rt.close()

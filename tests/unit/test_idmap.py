"""Id ranges and the owner shifts of build layers and contexts (``sandlot/runtime/idmap.py``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandlot.runtime.idmap import OVERFLOW_ID, IdRange, shift_tree, unshift_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

R = IdRange(1_000_000_000, 65536)


def test_range_parse_and_oci_round_trip() -> None:
    assert IdRange.parse("1000000000:65536") == R
    assert IdRange.parse("2000000000") == IdRange(2_000_000_000, 65536)
    for bad in ("x", "0:65536", "5:100", "4294967000:65536"):
        with pytest.raises(ValueError):
            IdRange.parse(bad)
    cfg = {"linux": {"namespaces": [{"type": "user"}], "uidMappings": R.oci_mappings()}}
    assert IdRange.from_oci(cfg) == R
    assert IdRange.from_oci({"linux": {"namespaces": [{"type": "pid"}]}}) is None
    assert IdRange.from_json(R.to_json()) == R and IdRange.from_json(None) is None
    assert R.to_host(0) == R.base and R.to_host(70000) == R.base + OVERFLOW_ID
    assert R.to_inside(R.base + 1000) == 1000 and R.to_inside(0) is None


def test_unshift_makes_a_layer_0_based_without_following_links(tmp_path: Path) -> None:
    canary = tmp_path / "host-canary"
    canary.write_text("host")
    os.chown(canary, 0, 0)
    upper = tmp_path / "upper"
    (upper / "home" / "user").mkdir(parents=True)
    (upper / "home" / "user" / "f").write_text("x")
    (upper / "usr").mkdir()
    (upper / "usr" / "suid").write_text("#!")
    os.symlink(str(canary), upper / "link")                  # a tenant's link to a host file
    os.mknod(upper / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))   # an overlay whiteout
    (upper / "odd").write_text("?")
    for p, ids in [(upper, (R.base, R.base)), (upper / "home", (R.base, R.base)),
                   (upper / "home" / "user", (R.base + 1000, R.base + 1000)),
                   (upper / "home" / "user" / "f", (R.base + 1000, R.base + 50)),
                   (upper / "usr", (R.base, R.base)), (upper / "usr" / "suid", (R.base, R.base))]:
        os.chown(p, *ids)
    os.chmod(upper / "usr" / "suid", 0o4755)
    os.chown(upper / "link", R.base + 1000, R.base + 1000, follow_symlinks=False)
    os.chown(upper / "odd", 12345, 12345)                     # outside the range
    unshift_tree(upper, R)

    def ids(p: Path) -> tuple[int, int]:
        st = os.lstat(p)
        return st.st_uid, st.st_gid

    assert ids(upper) == (0, 0) and ids(upper / "home" / "user") == (1000, 1000)
    assert ids(upper / "home" / "user" / "f") == (1000, 50)
    assert ids(upper / "link") == (1000, 1000)               # the link itself ...
    assert ids(canary) == (0, 0)                              # ... never its target
    assert ids(upper / "gone") == (0, 0)
    assert ids(upper / "odd") == (OVERFLOW_ID, OVERFLOW_ID)
    assert ids(upper / "usr" / "suid") == (0, 0)
    assert stat.S_IMODE(os.lstat(upper / "usr" / "suid").st_mode) == 0o4755   # chown cleared it; put back


def test_shift_moves_a_context_into_the_range(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "secret").write_text("s")
    os.chmod(ctx / "secret", 0o600)
    os.chown(ctx / "secret", 1000, 1000)
    (ctx / "big").write_text("b")
    os.chown(ctx / "big", 70000, 0)
    shift_tree(ctx, R)
    assert (os.lstat(ctx).st_uid, os.lstat(ctx / "secret").st_uid) == (R.base, R.base + 1000)
    assert os.lstat(ctx / "big").st_uid == R.base + OVERFLOW_ID
    assert stat.S_IMODE(os.lstat(ctx / "secret").st_mode) == 0o600


def test_a_criu_without_the_userns_patch_is_recognised(tmp_path: Path) -> None:
    from sandlot.runtime.checkpoint import USERNS_PATCH_MARK, criu_has_userns_patch

    stock, patched = tmp_path / "stock-criu", tmp_path / "patched-criu"
    stock.write_bytes(b"\x7fELF...criu 4.2.1...")
    patched.write_bytes(b"\x7fELF..." + USERNS_PATCH_MARK + b"...")
    assert not criu_has_userns_patch(str(stock)) and criu_has_userns_patch(str(patched))
    assert not criu_has_userns_patch(str(tmp_path / "missing"))

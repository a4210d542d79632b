"""``sandlot.tenant_fs`` against hostile trees: every attack has a canary outside the tree
that must stay untouched, and the legitimate operation next to it must still work."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from sandlot import tenant_fs
from sandlot.tenant_fs import Tree, TreeError


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory standing for the host, with a canary file and a canary directory."""
    h = tmp_path / "host"
    h.mkdir()
    (h / "canary").write_text("canary\n")
    os.chmod(h / "canary", 0o644)
    (h / "dir").mkdir()
    (h / "dir" / "inner").write_text("inner\n")
    return h


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tree"
    r.mkdir()
    return r


def untouched(host: Path) -> None:
    assert (host / "canary").read_text() == "canary\n"
    st = (host / "canary").stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0 and st.st_nlink == 1
    assert sorted(os.listdir(host)) == ["canary", "dir"]
    assert os.listdir(host / "dir") == ["inner"]
    assert (host / "dir" / "inner").read_text() == "inner\n"


# --- writes ---------------------------------------------------------------------------------


def test_write_replaces_a_final_symlink_to_the_host(host: Path, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "hosts").symlink_to(host / "canary")
    with Tree(root) as tree:
        tree.write_file("etc/hosts", "127.0.0.1 localhost\n", 0o644, 0, 0)
    untouched(host)
    assert not (root / "etc" / "hosts").is_symlink()
    assert (root / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_symlinked_directory_at_any_depth_resolves_inside(host: Path, root: Path, depth: int) -> None:
    prefix = "/".join(f"d{i}" for i in range(depth))
    base = root / prefix if prefix else root
    base.mkdir(parents=True, exist_ok=True)
    (base / "etc").symlink_to(host)          # absolute link to the host's directory
    rel = f"{prefix}/etc/canary" if prefix else "etc/canary"
    with Tree(root) as tree:
        tree.write_file(rel, "owned\n")
        tree.mkdir(f"{rel}-dir")
        tree.symlink(f"{rel}-link", "/x")
    untouched(host)
    # in-root resolution: the link's target is taken with the tree as "/"
    inside = root / str(host).lstrip("/") / "canary"
    assert inside.read_text() == "owned\n"


def test_relative_dotdot_symlinks_are_clamped_at_the_root(host: Path, root: Path) -> None:
    depth = len(root.parts)
    (root / "up").symlink_to("../" * depth + str(host).lstrip("/"))
    with Tree(root) as tree:
        tree.write_file("up/canary", "owned\n")
    untouched(host)
    assert (root / str(host).lstrip("/") / "canary").read_text() == "owned\n"


def test_dotdot_and_absolute_names_stay_in_the_tree(host: Path, root: Path) -> None:
    with Tree(root) as tree:
        with pytest.raises(TreeError):
            tree.write_file("../host/canary", "owned\n")
        with pytest.raises(TreeError):
            tree.write_file("a/../../canary", "owned\n")
        tree.write_file(str(host / "canary"), "inside\n")   # "/…" is relative to the tree
    untouched(host)
    assert (root / str(host).lstrip("/") / "canary").read_text() == "inside\n"


def test_magic_links_are_refused(host: Path, root: Path) -> None:
    (root / "magic").symlink_to(f"/proc/self/root{host}")
    (root / "fdlink").symlink_to("/proc/self/fd/0")
    with Tree(root) as tree:
        # in-root, /proc is the tree's own (absent) /proc: nothing reaches the host's
        tree.write_file("magic/canary", "owned\n")
        with pytest.raises(OSError):
            tree.read_bytes("magic")
    untouched(host)
    # a tree whose /proc *is* the real procfs (a bind mount) cannot be crossed either
    fd = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):  # EXDEV (other mount) or ELOOP (magic link)
            tenant_fs.openat2(fd, "root" + str(host / "canary"), os.O_RDONLY,
                              resolve=tenant_fs.IN_TREE)
    finally:
        os.close(fd)


def test_hard_link_to_a_file_outside_is_impossible(host: Path, root: Path) -> None:
    (root / "esc").symlink_to(host / "canary")
    with Tree(root) as tree:
        with pytest.raises(TreeError):
            tree.hardlink("x", "../host/canary")
        # the symlink itself is linked, never the host file it names
        tree.hardlink("x", "esc")
    assert os.readlink(root / "x") == str(host / "canary")
    untouched(host)


def test_hard_link_inside_the_tree_works(root: Path) -> None:
    (root / "a").write_text("a")
    with Tree(root) as tree:
        tree.hardlink("sub/b", "a")
    assert os.stat(root / "sub" / "b").st_ino == os.stat(root / "a").st_ino


def test_remove_unlinks_the_symlink_not_its_target(host: Path, root: Path) -> None:
    (root / "etc").symlink_to(host)
    (root / "l").symlink_to(host / "canary")
    with Tree(root, follow=False) as literal:
        assert literal.remove("etc/canary") is False   # "etc" is a symlink: taken literally
        assert literal.remove("l") is True
    untouched(host)
    assert not (root / "l").exists() and (root / "etc").is_symlink()


def test_set_attrs_uses_lchown_semantics(host: Path, root: Path) -> None:
    (root / "l").symlink_to(host / "canary")
    with Tree(root) as tree:
        tree.set_attrs("l", mode=0o4777, uid=1234, gid=1234)
    untouched(host)
    assert os.lstat(root / "l").st_uid == 1234


def test_dangling_symlink_parent_is_made_inside(host: Path, root: Path) -> None:
    (root / "etc").symlink_to(f"{host}/newdir")
    with Tree(root) as tree:
        tree.write_file("etc/hosts", "x\n")
    untouched(host)
    assert (root / str(host).lstrip("/") / "newdir" / "hosts").read_text() == "x\n"


def test_symlink_loop_is_a_clear_error(host: Path, root: Path) -> None:
    (root / "etc").symlink_to("/etc")
    with Tree(root) as tree, pytest.raises(TreeError, match="cannot be resolved inside the tree"):
        tree.write_file("etc/hosts", "x\n")
    untouched(host)


def test_a_racing_directory_swap_never_reaches_the_host(host: Path, root: Path) -> None:
    """A tenant flips ``d`` between a real directory and a symlink to the host while the
    host keeps writing ``d/f``: every write lands inside the tree."""
    (root / "d").mkdir()
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.rename(root / "d", root / "d.real")
                os.symlink(host, root / "d")
                os.unlink(root / "d")
                os.rename(root / "d.real", root / "d")
            except OSError:
                pass

    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        with Tree(root) as tree:
            for i in range(300):
                try:
                    tree.write_file("d/f", f"{i}\n")
                    tree.write_file("d/canary", "owned\n")
                except (OSError, TreeError):
                    pass
    finally:
        stop.set()
        thread.join()
    untouched(host)


# --- tar extraction -------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "",
          uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, uid, gid
    return info


def test_tar_symlink_then_file_at_the_same_name(host: Path, root: Path, tmp_path: Path) -> None:
    """The reproduced attack: ``f -> /host/canary`` then a setuid regular file ``f``."""
    archive = _tar(tmp_path / "a.tar", [
        (_info("f", tarfile.SYMTYPE, linkname=str(host / "canary")), None),
        (_info("f", mode=0o4755), b"#!/bin/sh\nid\n"),
    ])
    with Tree(root) as tree:
        tenant_fs.extract_tar(archive, tree)
    untouched(host)
    st = os.lstat(root / "f")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o4755   # setuid kept, inside
    assert (root / "f").read_bytes() == b"#!/bin/sh\nid\n"


def test_tar_symlinked_dir_then_member_under_it(host: Path, root: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [
        (_info("d", tarfile.SYMTYPE, linkname=str(host)), None),
        (_info("d/canary"), b"owned\n"),
        (_info("e", tarfile.SYMTYPE, linkname="../../../../../../../.."), None),
        (_info("e" + str(host / "canary")), b"owned\n"),
    ])
    with Tree(root) as tree:
        tenant_fs.extract_tar(archive, tree)
    untouched(host)
    assert (root / str(host).lstrip("/") / "canary").read_text() == "owned\n"


@pytest.mark.parametrize("name", ["../canary", "/canary", "a/../../canary"])
def test_tar_escaping_names_are_refused(host: Path, root: Path, tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "a.tar", [(_info(name), b"owned\n")])
    with Tree(root) as tree, pytest.raises(TreeError, match="escapes"):
        tenant_fs.extract_tar(archive, tree)
    untouched(host)


def test_tar_hard_links_only_inside(host: Path, root: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [
        (_info("ok"), b"data"),
        (_info("hl", tarfile.LNKTYPE, linkname="ok"), None),
        (_info("sym", tarfile.SYMTYPE, linkname=str(host / "canary")), None),
        (_info("hl2", tarfile.LNKTYPE, linkname="sym"), None),
    ])
    with Tree(root) as tree:
        tenant_fs.extract_tar(archive, tree)
    assert os.stat(root / "hl").st_ino == os.stat(root / "ok").st_ino
    assert os.readlink(root / "hl2") == str(host / "canary")   # a link to the symlink itself
    untouched(host)
    escaping = _tar(tmp_path / "b.tar", [(_info("x", tarfile.LNKTYPE, linkname="../host/canary"), None)])
    with Tree(root) as tree, pytest.raises(TreeError):
        tenant_fs.extract_tar(escaping, tree)
    absent = _tar(tmp_path / "c.tar", [(_info("x", tarfile.LNKTYPE, linkname=str(host / "canary")), None)])
    with Tree(root) as tree, pytest.raises(TreeError):
        tenant_fs.extract_tar(absent, tree)
    untouched(host)


def test_tar_devices_and_fifos_are_skipped(root: Path, tmp_path: Path) -> None:
    dev = _info("sda", tarfile.BLKTYPE)
    dev.devmajor, dev.devminor = 8, 0
    archive = _tar(tmp_path / "a.tar", [(dev, None), (_info("fifo", tarfile.FIFOTYPE), None), (_info("f"), b"x")])
    with Tree(root) as tree:
        skipped = tenant_fs.extract_tar(archive, tree)
    assert sorted(skipped) == ["fifo", "sda"]
    assert sorted(os.listdir(root)) == ["f"]


def test_tar_keeps_owners_modes_and_internal_symlinks(root: Path, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [
        (_info("app", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000), None),
        (_info("app/run.sh", mode=0o2755, uid=1000, gid=50), b"echo hi\n"),
        (_info("app/rel", tarfile.SYMTYPE, linkname="run.sh", uid=1000, gid=1000), None),
        (_info("app/abs", tarfile.SYMTYPE, linkname="/app/run.sh"), None),
    ])
    with Tree(root) as tree:
        tenant_fs.extract_tar(archive, tree)
    st = os.stat(root / "app" / "run.sh")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 50, 0o2755)
    d = os.stat(root / "app")
    assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (1000, 0o750)
    assert os.readlink(root / "app" / "rel") == "run.sh" and os.lstat(root / "app" / "rel").st_uid == 1000
    assert os.readlink(root / "app" / "abs") == "/app/run.sh"


def test_not_a_tar_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a tar at all" * 100)
    with Tree(root) as tree, pytest.raises(TreeError, match="not a readable tar"):
        tenant_fs.extract_tar(junk, tree)


def test_read_tar_member_does_not_follow_links(tmp_path: Path, host: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [
        (_info("Dockerfile"), b"FROM base\n"),
        (_info("link", tarfile.SYMTYPE, linkname=str(host / "canary")), None),
    ])
    assert tenant_fs.read_tar_member(archive, "./Dockerfile", 1024) == b"FROM base\n"
    assert tenant_fs.read_tar_member(archive, "missing", 1024) is None
    with pytest.raises(TreeError):
        tenant_fs.read_tar_member(archive, "link", 1024)


# --- globs ------------------------------------------------------------------------------------


def test_glob_never_lists_outside_the_tree(host: Path, root: Path) -> None:
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("")
    (root / "src" / ".hidden").write_text("")
    (root / "src" / "pkg").mkdir()
    (root / "src" / "pkg" / "b.py").write_text("")
    (root / "out").symlink_to(host)                 # would list the host's dir if followed
    (root / "src" / "inlink").symlink_to("pkg")     # an in-tree link: usable literally
    with Tree(root) as tree:
        assert tenant_fs.match_glob(tree, "out/*") == []
        assert tenant_fs.match_glob(tree, "out/canary") == []
        assert tenant_fs.match_glob(tree, "**/canary") == []
        assert tenant_fs.match_glob(tree, "src/*") == ["src/.hidden", "src/a.py", "src/inlink", "src/pkg"]
        assert tenant_fs.match_glob(tree, "**/*.py") == ["src/a.py", "src/pkg/b.py"]
        assert tenant_fs.match_glob(tree, "src/inlink/b.py") == ["src/inlink/b.py"]
        assert tenant_fs.match_glob(tree, "src/inlink/*") == ["src/inlink/b.py"]
        assert tenant_fs.match_glob(tree, "out") == ["out"]           # the link itself is a source
        assert tenant_fs.match_glob(tree, ".") == ["."]
        assert tenant_fs.match_glob(tree, "../*") == []
    untouched(host)


# --- tree copies --------------------------------------------------------------------------------


def test_copy_tree_keeps_everything_and_follows_nothing(host: Path, root: Path, tmp_path: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "hosts").symlink_to(host / "canary")
    (root / "etc2").symlink_to(host)
    (root / "bin").mkdir(mode=0o755)
    (root / "bin" / "su").write_bytes(b"\x7fELF")
    os.chown(root / "bin" / "su", 0, 0)
    os.chmod(root / "bin" / "su", 0o4755)
    os.link(root / "bin" / "su", root / "bin" / "su2")
    home = root / "home" / "user"
    home.mkdir(parents=True)
    (home / "f").write_text("mine")
    os.chown(home, 1000, 1000)
    os.chown(home / "f", 1000, 1000)
    os.mknod(root / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))    # an overlay whiteout
    os.mkfifo(root / "fifo")
    os.setxattr(root / "home", "trusted.overlay.opaque", b"y")
    dst = tmp_path / "copy"
    tenant_fs.copy_tree(root, dst)
    untouched(host)
    assert os.readlink(dst / "etc" / "hosts") == str(host / "canary")
    assert os.readlink(dst / "etc2") == str(host)
    su = os.stat(dst / "bin" / "su")
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_ino == os.stat(dst / "bin" / "su2").st_ino
    assert (os.stat(dst / "home" / "user").st_uid, os.stat(dst / "home" / "user" / "f").st_uid) == (1000, 1000)
    wh = os.lstat(dst / "gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    assert os.getxattr(dst / "home", "trusted.overlay.opaque") == b"y"
    with pytest.raises(FileExistsError):   # never into an existing directory
        tenant_fs.copy_tree(root, dst)


def test_flatten_copies_the_merged_view_without_following(host: Path, tmp_path: Path) -> None:
    """``templates.flatten`` (overlay of tenant layers → one layer) goes through copy_tree:
    whiteouts are applied by overlayfs, symlinks to the host are copied as links."""
    from sandlot.templates.flatten import flatten

    lower, upper = tmp_path / "l1", tmp_path / "l2"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "gone").write_text("old")
    (lower / "etc" / "kept").write_text("kept")
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))   # whiteout
    (upper / "etc" / "esc").symlink_to(host / "canary")
    (upper / "run").write_bytes(b"x")
    os.chmod(upper / "run", 0o4711)
    dest = tmp_path / "flat"
    flatten([upper, lower], dest, tmp_path / "mnt")
    untouched(host)
    assert sorted(os.listdir(dest / "etc")) == ["esc", "kept"]
    assert os.readlink(dest / "etc" / "esc") == str(host / "canary")
    assert stat.S_IMODE(os.stat(dest / "run").st_mode) == 0o4711
    assert not (tmp_path / "mnt").exists()


def test_layer_clean_up_never_deletes_through_a_symlinked_etc(host: Path, tmp_path: Path) -> None:
    """A build step made ``/etc`` a symlink to a host directory that has ``hosts`` etc.:
    committing the layer removes the runtime's files from the layer only."""
    from sandlot.templates.layers import _clean

    for name in ("hosts", "resolv.conf", "hostname"):
        (host / "dir" / name).write_text("host file\n")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "etc").symlink_to(host / "dir")
    (upper / "app").mkdir()
    assert _clean(upper) is True
    assert sorted(os.listdir(host / "dir")) == ["hostname", "hosts", "inner", "resolv.conf"]
    # the legitimate case: the runtime's own files in a real etc/ go, the step's stay
    upper2 = tmp_path / "upper2"
    (upper2 / "etc").mkdir(parents=True)
    for name in ("hosts", "resolv.conf"):
        (upper2 / "etc" / name).write_text("runtime\n")
    os.mknod(upper2 / "etc" / "hostname", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    assert _clean(upper2) is False and not (upper2 / "etc").exists()


def test_write_file_with_a_long_multibyte_name(root: Path) -> None:
    name = "\U0001F600" * 63   # 252 bytes: the temp name must not grow with it
    with Tree(root) as tree:
        tree.write_file(f"d/{name}", b"x" * 3_000_000)
        assert tree.read_bytes(f"d/{name}", 4_000_000) == b"x" * 3_000_000
    assert os.listdir(root / "d") == [name]


def test_copy_tree_never_reads_the_host_while_the_tree_changes(host: Path, root: Path, tmp_path: Path) -> None:
    """A sandbox that is not frozen flips ``d`` between its own directory and a symlink to a
    host directory during the copy: whatever a copy catches, it holds the sandbox's files or
    the symlink itself — never the host's files."""
    (root / "d").mkdir()
    for i in range(50):
        (root / "d" / f"f{i}").write_text("sandbox\n")
    (host / "dir" / "canary").write_text("canary\n")
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                os.rename(root / "d", root / "d.real")
                os.symlink(host / "dir", root / "d")
                os.unlink(root / "d")
                os.rename(root / "d.real", root / "d")
            except OSError:
                pass

    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        for i in range(40):
            dst = tmp_path / f"copy{i}"
            try:
                tenant_fs.copy_tree(root, dst)
            except OSError:
                pass
            for path, _dirs, files in os.walk(dst):
                for name in files:
                    assert (Path(path) / name).read_text() != "canary\n"
                    assert name not in ("inner", "canary")
    finally:
        stop.set()
        thread.join()
    assert (host / "dir" / "canary").read_text() == "canary\n"
    (host / "dir" / "canary").unlink()
    untouched(host)


def test_depth_is_bounded_with_a_clear_error(root: Path, tmp_path: Path) -> None:
    """A tenant's 300-deep directory chain: copies and walks refuse it instead of holding
    hundreds of fds or hitting Python's recursion limit; 200 deep still works."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(300):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
        if i == 199:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    with pytest.raises(TreeError, match="deeper than 256"):
        tenant_fs.copy_tree(root, tmp_path / "copy")
    with Tree(root) as tree:
        with pytest.raises(TreeError, match="deeper than 256"):
            list(tree.walk())
        with pytest.raises(TreeError, match="deeper than 256"):
            tree.write_file("/".join(["d"] * 300) + "/x", "x")
        assert tree.exists("/".join(["d"] * 200) + "/f")
    with tarfile.open(tmp_path / "deep.tar", "w") as tar:
        tar.addfile(_info("/".join(["a"] * 300) + "/f"), io.BytesIO(b""))
    with Tree(tmp_path / "copy2", create=True) as tree, pytest.raises(TreeError, match="deeper than 256"):
        tenant_fs.extract_tar(tmp_path / "deep.tar", tree)

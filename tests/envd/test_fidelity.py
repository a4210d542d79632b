"""envd behaviours an unmodified client can tell apart from E2B's (issue 15): the order of a
recursive listing, metadata on overwrite, reads of files whose size ``stat`` misreports."""

from __future__ import annotations

import os
import subprocess
import threading

import httpx
import pytest


def _tree(root: str) -> None:
    for d in ("b/y", "b/x/deep", "a", "c"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    for f in ("z.txt", "b/2", "b/1", "b/x/f", "b/x/deep/g", "a/k", "B"):
        with open(f"{root}/{f}", "w") as fh:
            fh.write("x")


# filepath.WalkDir: lexical by bytes ("B" < "a"), each directory followed by its own children
WALK_ORDER = ["B", "a", "a/k", "b", "b/1", "b/2", "b/x", "b/x/deep", "b/x/deep/g", "b/x/f", "b/y",
              "c", "z.txt"]


def test_recursive_list_is_depth_first_lexical(sbx, workdir):
    _tree(workdir)
    got = [e.path[len(workdir) + 1:] for e in sbx.files.list(workdir, depth=10)]
    assert got == WALK_ORDER
    # depth cuts the walk, the order of what is left is the same
    assert [e.path[len(workdir) + 1:] for e in sbx.files.list(workdir, depth=2)] == \
        [p for p in WALK_ORDER if p.count("/") < 2]
    assert [e.name for e in sbx.files.list(workdir)] == ["B", "a", "b", "c", "z.txt"]


async def test_recursive_list_order_async(asbx, workdir):
    _tree(workdir)
    got = [e.path[len(workdir) + 1:] for e in await asbx.files.list(workdir, depth=10)]
    assert got == WALK_ORDER


def test_recursive_list_deeper_than_python_recursion(sbx, workdir):
    """A tenant's tree nested past Python's recursion limit is walked, not a 500."""
    levels = 1100
    subprocess.run(["mkdir", "-p", workdir + "/d" * levels], check=True)   # os.makedirs recurses
    try:
        entries = sbx.files.list(workdir, depth=levels + 5)
        assert len(entries) == levels
        assert entries[-1].path == workdir + "/d" * levels
    finally:
        subprocess.run(["rm", "-rf", workdir], check=True)


def test_write_without_metadata_clears_it(sbx, workdir):
    path = f"{workdir}/m.txt"
    assert sbx.files.write(path, "one", metadata={"owner": "alice"}).metadata == {"owner": "alice"}
    os.setxattr(path, "user.other", b"keep")   # not envd's: an overwrite leaves it alone
    info = sbx.files.write(path, "two")
    assert info.metadata is None
    assert sbx.files.get_info(path).metadata is None
    assert [e.metadata for e in sbx.files.list(workdir)] == [None]
    assert "user.e2b.owner" not in os.listxattr(path)
    assert os.getxattr(path, "user.other") == b"keep"
    # the legitimate feature: a write with metadata sets it, another replaces it
    assert sbx.files.write(path, "three", metadata={"tag": "v1"}).metadata == {"tag": "v1"}
    assert sbx.files.write(path, "four", metadata={"k": "v"}).metadata == {"k": "v"}
    assert sbx.files.read(path) == "four"


async def test_write_without_metadata_clears_it_async(asbx, workdir):
    path = f"{workdir}/a.bin"
    await asbx.files.write(path, b"one", metadata={"a": "1"})
    assert (await asbx.files.write(path, b"two")).metadata is None
    assert (await asbx.files.get_info(path)).metadata is None


@pytest.mark.parametrize("path", ["/proc/self/status", "/proc/cpuinfo", "/proc/version"])
def test_zero_size_proc_files_are_read_to_eof(sbx, envd, path):
    assert os.stat(path).st_size == 0
    text = sbx.files.read(path)
    assert text.strip() and text.endswith("\n")
    r = httpx.get(envd.url + "/files", params={"path": path})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content) > 0


async def test_zero_size_proc_file_async(asbx):
    assert "Linux" in await asbx.files.read("/proc/version")


def test_fifo_is_read_until_its_writer_closes(sbx, workdir):
    os.makedirs(workdir)
    fifo = f"{workdir}/pipe"
    os.mkfifo(fifo)
    payload = os.urandom(3 * 1024 * 1024 + 17)   # more than one read, more than SMALL

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(payload)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert bytes(sbx.files.read(fifo, format="bytes")) == payload
    finally:
        t.join()


@pytest.mark.parametrize("size", [64 * 1024, 3 * 1024 * 1024])
def test_file_changing_while_read_gives_well_formed_responses(sbx, envd, workdir, size):
    """A writer truncates and refills the file throughout: every response is complete
    (httpx raises on a body shorter than its Content-Length or an unterminated chunked one)."""
    os.makedirs(workdir)
    path = f"{workdir}/churn"
    with open(path, "wb") as f:
        f.write(b"a" * size)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            with open(path, "wb") as f:   # O_TRUNC: it shrinks to 0, then grows again
                f.write(bytes([97 + n % 26]) * (size // 2 + (n * 7919) % size))

    t = threading.Thread(target=churn)
    t.start()
    try:
        with httpx.Client(timeout=30) as c:
            for _ in range(15):
                r = c.get(envd.url + "/files", params={"path": path})
                assert r.status_code == 200
                if "content-length" in r.headers:
                    assert int(r.headers["content-length"]) == len(r.content)
                else:
                    assert r.headers.get("transfer-encoding") == "chunked"
                assert len(r.content) <= 2 * size
    finally:
        stop.set()
        t.join()
    assert sbx.files.read(path, format="bytes")   # still an ordinary file to read


def test_small_files_keep_an_exact_content_length(envd, sbx, workdir):
    sbx.files.write(f"{workdir}/s", "hello")
    r = httpx.get(envd.url + "/files", params={"path": f"{workdir}/s"})
    assert r.headers["content-length"] == "5" and r.content == b"hello"


async def test_a_range_that_shrank_mid_read_breaks_the_transfer(tmp_path):
    """The range was promised from ``stat`` (Content-Range); a file found shorter than that
    ends the connection (an error the client sees) instead of a complete-looking short body."""
    from sandlot.envd.files_http import FileChangedError, read_file

    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    got = b""
    with pytest.raises(FileChangedError):
        async for chunk in read_file(str(path), False, 2, 20):
            got += chunk
    assert got == b"23456789"
    # the range as promised streams whole
    assert b"".join([c async for c in read_file(str(path), False, 2, 5)]) == b"23456"


def test_remove_a_tree_deeper_than_python_recursion(sbx, workdir):
    """The tree that lists (above) also removes; symlinks in it go, their targets stay."""
    levels = 1100
    deepest = workdir + "/d" * levels
    subprocess.run(["mkdir", "-p", deepest], check=True)
    try:
        outside = f"{workdir}-canary"
        os.makedirs(outside)
        with open(f"{outside}/keep", "w") as f:
            f.write("canary")
        os.symlink(outside, f"{workdir}/d/link-to-dir")
        os.symlink(f"{outside}/keep", f"{deepest}/link-to-file")
        with open(f"{deepest}/file", "w") as f:
            f.write("x")
        sbx.files.remove(workdir)
        assert not sbx.files.exists(workdir)
        with open(f"{outside}/keep") as f:
            assert f.read() == "canary"
    finally:
        subprocess.run(["rm", "-rf", workdir, f"{workdir}-canary"], check=True)

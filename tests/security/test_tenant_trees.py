"""Tenant-shaped trees are handled on the host only through ``sandlot.tenant_fs``
(docs/security/tenant-trees.md).

Attacks, each with a canary on the host that must stay untouched:
* a COPY archive with a symlink ``f -> <host path>`` then a setuid regular file ``f``
  (E2B template build, unmodified SDK; and a Prime image build's context);
* a sandbox whose ``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/hostname`` — or its whole
  ``/etc`` — are symlinks to host paths is snapshotted and a sandbox made from it.
Next to each, the legitimate feature still works: COPY of a tree with internal symlinks,
clones that have their own hosts file.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template

from sandlot import ids
from tests.e2e.server import Server, unique_instance, unique_subnet

CANARY = b"canary: the host's own file\n"


@pytest.fixture
def canary_dir() -> Iterator[Path]:
    """Host paths the attacks aim at (the server runs as root on this host)."""
    d = Path(f"/tmp/sandlot-canary-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o755)
    (d / "target").write_bytes(CANARY)
    os.chmod(d / "target", 0o644)
    (d / "etc").mkdir()
    for name in ("hosts", "resolv.conf", "hostname"):
        (d / "etc" / name).write_bytes(CANARY)
        os.chmod(d / "etc" / name, 0o644)
    yield d
    for path in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    d.rmdir()


def assert_untouched(d: Path) -> None:
    files = [d / "target", *(d / "etc" / n for n in ("hosts", "resolv.conf", "hostname"))]
    for path in files:
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode), path
        assert path.read_bytes() == CANARY, path
        assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0, path
    assert sorted(os.listdir(d)) == ["etc", "target"]
    assert sorted(os.listdir(d / "etc")) == ["hostname", "hosts", "resolv.conf"]


def hostile_tar(target: Path, payload: bytes, prefix: str = "") -> bytes:
    """``f -> target`` then a setuid-root regular file ``f``: ``tarfile.extract`` writes
    the file through the symlink, i.e. onto the host."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if prefix:
            folder = tarfile.TarInfo(prefix)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        link = tarfile.TarInfo(f"{prefix}/f" if prefix else "f")
        link.type, link.linkname = tarfile.SYMTYPE, str(target)
        tar.addfile(link)
        body = tarfile.TarInfo(link.name)
        body.mode, body.size = 0o4755, len(payload)
        tar.addfile(body, io.BytesIO(payload))
    return buffer.getvalue()


# --- COPY archives ------------------------------------------------------------------------------


@pytest.mark.slow
def test_copy_archive_symlink_then_file_stays_in_the_layer(server: Server, canary_dir: Path,
                                                           tmp_path: Path) -> None:
    """The SDK asks for an upload link and skips the upload when the server already has the
    files; the attacker PUTs the hostile tar to that link first, then builds normally."""
    context = tmp_path / "ctx"
    (context / "d").mkdir(parents=True)
    (context / "d" / "f").write_text("benign\n")
    name = f"tt-{uuid.uuid4().hex[:8]}"
    # a directory source: its filesHash cannot be re-checked against the archive, so the
    # server has to unpack whatever was uploaded
    template = Template(file_context_path=str(context)).from_template("base").copy("d", "/opt/d")
    files_hash = next(i["filesHash"] for i in template._template._instructions_with_hashes()
                      if i.get("filesHash"))
    headers = {"X-API-Key": server.api_key}
    payload = b"#!/bin/sh\necho pwned\n"
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        requested = client.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})
        assert requested.status_code == 202, requested.text
        link = client.get(f"/templates/{requested.json()['templateID']}/files/{files_hash}")
        assert link.status_code == 201 and link.json()["present"] is False, link.text
        put = httpx.put(link.json()["url"], content=hostile_tar(canary_dir / "target", payload, "d"), timeout=60)
    assert put.status_code == 201, put.text
    assert_untouched(canary_dir)
    Template.build(template, name, cpu_count=1, memory_mb=512)
    assert_untouched(canary_dir)
    # the file landed inside the layer only: a sandbox of the template has it, setuid and all
    sbx = Sandbox.create(name, timeout=60)
    try:
        assert sbx.files.read("/opt/d/f").encode() == payload
        assert sbx.commands.run("stat -c %a /opt/d/f").stdout.strip() == "4755"
    finally:
        sbx.kill()


@pytest.mark.slow
def test_prime_context_symlink_then_file_stays_in_the_image(server: Server, canary_dir: Path) -> None:
    """The same archive as a Prime build context (hashed by the server itself), COPY'd whole."""
    buffer = io.BytesIO()
    payload = b"#!/bin/sh\necho pwned\n"
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        inner = tarfile.open(fileobj=io.BytesIO(hostile_tar(canary_dir / "target", payload)))
        for member in inner.getmembers():
            tar.addfile(member, inner.extractfile(member) if member.isreg() else None)
        dockerfile = b"FROM base\nCOPY --chmod=755 f /opt/f\n"
        info = tarfile.TarInfo(".__prime_dockerfile__")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"},
                       timeout=60)
    with api:
        tag = "t" + uuid.uuid4().hex[:6]
        init = api.post("/images/build", json={"image_name": "hostile", "image_tag": tag,
                                               "dockerfile_path": ".__prime_dockerfile__"})
        assert init.status_code == 201, init.text
        body = init.json()
        assert httpx.put(body["upload_url"], content=buffer.getvalue()).status_code == 200
        assert api.post(f"/images/build/{body['build_id']}/start", json={"context_uploaded": True}).status_code == 200
        deadline = time.monotonic() + 300
        while (build := api.get(f"/images/build/{body['build_id']}").json())["status"] not in (
                "COMPLETED", "FAILED", "CANCELLED") and time.monotonic() < deadline:
            time.sleep(1)
    assert_untouched(canary_dir)
    assert build["status"] == "COMPLETED", build
    sbx = Sandbox.create(body["fullImagePath"], timeout=60)
    try:
        assert sbx.files.read("/opt/f").encode() == payload
        assert sbx.commands.run("stat -c %a /opt/f").stdout.strip() == "755"
    finally:
        sbx.kill()


def test_prime_copy_chmod_must_be_octal(server: Server) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in ((".__prime_dockerfile__", b"FROM base\nCOPY --chmod='7;touch /x' f /f\n"), ("f", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"},
                      timeout=60) as api:
        body = api.post("/images/build", json={"image_name": "chmod", "image_tag": "t1",
                                               "dockerfile_path": ".__prime_dockerfile__"}).json()
        assert httpx.put(body["upload_url"], content=buffer.getvalue()).status_code == 200
        api.post(f"/images/build/{body['build_id']}/start", json={"context_uploaded": True})
        build = api.get(f"/images/build/{body['build_id']}").json()
    assert build["status"] == "FAILED"
    assert "--chmod must be an octal mode" in build["errorMessage"] and "line 2" in build["errorMessage"]


@pytest.mark.slow
def test_copy_of_a_tree_with_internal_symlinks_still_works(server: Server, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    (context / "app" / "lib").mkdir(parents=True)
    (context / "app" / "lib" / "real.txt").write_text("real\n")
    (context / "app" / "rel").symlink_to("lib/real.txt")
    (context / "app" / "abs").symlink_to("/srv/app/lib/real.txt")
    (context / "app" / "libdir").symlink_to("lib")
    (context / "app" / ".hidden").write_text("h\n")
    name = f"tt-{uuid.uuid4().hex[:8]}"
    template = (Template(file_context_path=str(context)).from_template("base")
                .copy("app/", "/srv/app/", resolve_symlinks=False)
                .copy("app/lib/*.txt", "/srv/glob/"))
    Template.build(template, name, cpu_count=1, memory_mb=512)
    sbx = Sandbox.create(name, timeout=60)
    try:
        out = sbx.commands.run("readlink /srv/app/rel /srv/app/abs /srv/app/libdir; cat /srv/app/rel /srv/app/abs "
                               "/srv/app/libdir/real.txt /srv/app/.hidden /srv/glob/real.txt").stdout.split()
        assert out == ["lib/real.txt", "/srv/app/lib/real.txt", "lib", "real", "real", "real", "h", "real"]
    finally:
        sbx.kill()


# --- snapshot clones ------------------------------------------------------------------------------


def _clone_hosts_ok(clone: Sandbox) -> None:
    hosts = clone.commands.run("cat /etc/hosts", user="root").stdout
    ip = clone.commands.run("hostname -I", user="root").stdout.split()[0]
    assert "127.0.0.1\tlocalhost" in hosts
    assert f"{ip}\t" in hosts, (ip, hosts)


@pytest.mark.slow
def test_snapshot_of_symlinked_etc_files_never_writes_the_host(server: Server, canary_dir: Path) -> None:
    src = Sandbox.create(timeout=180)
    clone = None
    try:
        links = " && ".join(f"ln -sf {canary_dir}/etc/{n} /etc/{n}" for n in ("hosts", "resolv.conf", "hostname"))
        r = src.commands.run(links + " && readlink /etc/hosts", user="root")
        assert r.stdout.strip() == f"{canary_dir}/etc/hosts"
        src.files.write("/home/user/kept.txt", "kept")
        snap = src.create_snapshot()
        assert_untouched(canary_dir)
        clone = Sandbox.create(snap.snapshot_id, timeout=120)
        assert_untouched(canary_dir)
        # the clone works and has its own hosts file (the symlink was replaced, not followed)
        assert clone.files.read("/home/user/kept.txt") == "kept"
        assert clone.commands.run("test -L /etc/hosts || echo file", user="root").stdout.strip() == "file"
        _clone_hosts_ok(clone)
        # the other links are the tenant's own business and stay as they made them
        assert clone.commands.run("readlink /etc/resolv.conf", user="root").stdout.strip() == \
            f"{canary_dir}/etc/resolv.conf"
        Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        src.kill()
        if clone is not None:
            clone.kill()
    assert_untouched(canary_dir)


@pytest.fixture(scope="module")
def no_host_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that does not bind-mount the host's CA bundle into ``/etc``, so a sandbox's
    root can replace its whole ``/etc`` (the mount otherwise keeps the directory busy)."""
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-trees"), api_key=ids.new_api_key(),
                 instance=unique_instance("v"), subnet=unique_subnet(13),
                 extra_env={"SANDLOT_TRUST_HOST_CA": "false"})
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_snapshot_of_a_symlinked_etc_dir_never_writes_the_host(no_host_ca: Server, canary_dir: Path) -> None:
    """``/etc`` itself becomes a symlink to a path that is a host directory full of canaries
    (and, inside the sandbox, a copy of its real /etc, so the sandbox keeps working)."""
    opts = {"api_key": no_host_ca.api_key, "api_url": no_host_ca.url, "sandbox_url": no_host_ca.url}
    src = Sandbox.create(timeout=180, **opts)
    clone = None
    try:
        d = f"{canary_dir}/etc"
        r = src.commands.run(f"mkdir -p {d} && cp -a /etc/. {d}/ && rm -rf /etc && ln -s {d} /etc && readlink /etc",
                             user="root")
        assert r.stdout.strip() == d
        snap = src.create_snapshot()
        assert_untouched(canary_dir)
        clone = Sandbox.create(snap.snapshot_id, timeout=120, **opts)
        assert_untouched(canary_dir)
        assert clone.commands.run("readlink /etc", user="root").stdout.strip() == d
        _clone_hosts_ok(clone)   # written inside the clone's tree, where its /etc points
        Sandbox.delete_snapshot(snap.snapshot_id, **opts)
    finally:
        src.kill()
        if clone is not None:
            clone.kill()
    assert_untouched(canary_dir)


@pytest.mark.slow
def test_snapshot_with_odd_etc_entries_still_clones(server: Server, canary_dir: Path) -> None:
    """Legit but unusual: hosts as a relative in-sandbox symlink, a fifo, a whiteout (deleted
    file), a setuid file and a hard link; the clone keeps them all and works."""
    src = Sandbox.create(timeout=180)
    clone = None
    try:
        src.commands.run(
            "cp /etc/hosts /etc/hosts.real && ln -sf hosts.real /etc/hosts && mkfifo /etc/odd.fifo && "
            "rm -f /etc/debian_version && cp /bin/true /usr/local/bin/suid && chmod 4755 /usr/local/bin/suid && "
            "ln /usr/local/bin/suid /usr/local/bin/suid.hl", user="root")
        snap = src.create_snapshot()
        clone = Sandbox.create(snap.snapshot_id, timeout=120)
        out = clone.commands.run(
            "test -p /etc/odd.fifo && echo fifo; test -e /etc/debian_version || echo deleted; "
            "stat -c %a /usr/local/bin/suid; stat -c %h /usr/local/bin/suid.hl", user="root").stdout.split()
        assert out == ["fifo", "deleted", "4755", "2"]
        _clone_hosts_ok(clone)
        Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        src.kill()
        if clone is not None:
            clone.kill()
    assert_untouched(canary_dir)

"""Root in a sandbox is not root on the host: sandboxes run in a user namespace whose ids
0..65535 are an unprivileged host range (docs/security/userns.md).

Every attack below is something host root could do, and sandbox root could before user
namespaces: read a root-only host file it can see, leave a setuid-root binary on the host
disk, give a file away to an arbitrary host uid, create device nodes, open raw sockets on
the host-owned network namespace. Each asserts the host canary and that the legitimate
feature next to it (sudo, root/user commands, file owners through envd, pause/resume,
snapshots and forks) still works.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox

from sandlot import ids
from sandlot.runtime.idmap import IdRange
from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

RANGE = IdRange.parse(os.environ.get("SANDLOT_USERNS_RANGE", "1000000000:65536"))
BASE = RANGE.base
DATA_DIR = default_data_dir()


@pytest.fixture(scope="module")
def userns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with user namespaces on, whatever the default is."""
    srv = Server(workdir=tmp_path_factory.mktemp("userns"), api_key=ids.new_api_key(),
                 instance=unique_instance("j"), subnet=unique_subnet(12),   # its own netns names
                 extra_env={"SANDLOT_USERNS": "true", "SANDLOT_USERNS_RANGE": f"{RANGE.base}:{RANGE.size}"})
    srv.start()
    try:
        with sdk_pointed_at(srv):
            yield srv
    finally:
        srv.reset()


@pytest.fixture
def sbx(userns_server: Server) -> Iterator[Sandbox]:
    s = Sandbox.create(timeout=180)
    try:
        yield s
    finally:
        s.kill()


def _upper(server: Server, sandbox_id: str) -> Path:
    return DATA_DIR / "runtime" / server.instance / "sandboxes" / sandbox_id / "disk" / "upper"


def _root(sbx: Sandbox, cmd: str) -> "object":
    return sbx.commands.run(cmd, user="root")


def _try_root(sbx: Sandbox, cmd: str) -> tuple[int, str]:
    from e2b.sandbox.commands.command_handle import CommandExitException

    try:
        r = sbx.commands.run(cmd, user="root")
        return r.exit_code, r.stdout + r.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


def test_id_maps_show_the_unprivileged_range(sbx: Sandbox) -> None:
    line = f"0 {BASE} {RANGE.size}"
    for name in ("uid_map", "gid_map"):
        assert " ".join(_root(sbx, f"cat /proc/self/{name}").stdout.split()) == line
    # sandbox root is still uid 0 inside, with Docker's capability set inside
    assert _root(sbx, "id -u").stdout.strip() == "0"


def test_files_written_by_sandbox_root_belong_to_the_range_on_the_host(userns_server: Server, sbx: Sandbox) -> None:
    _root(sbx, "echo r > /root/by-root && echo u > /tmp/by-user-placeholder")
    sbx.commands.run("echo u > /home/user/by-user", user="user")
    upper = _upper(userns_server, sbx.sandbox_id)
    st = os.lstat(upper / "root" / "by-root")
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    st = os.lstat(upper / "home" / "user" / "by-user")
    assert (st.st_uid, st.st_gid) == (BASE + 1000, BASE + 1000)
    # the data dir is searchable by the range's root (runc sets up mounts as it), by no other user
    st = os.stat(DATA_DIR)
    assert st.st_gid == BASE and stat.S_IMODE(st.st_mode) == 0o710
    # the runtime's own files in the upper dir are the sandbox root's too
    assert os.lstat(upper / "etc" / "hosts").st_uid == BASE
    assert os.lstat(upper).st_uid == BASE


def test_setuid_root_binary_made_inside_is_not_setuid_root_on_the_host(userns_server: Server, sbx: Sandbox) -> None:
    _root(sbx, "cp /bin/cat /tmp/suid-cat && chown 0:0 /tmp/suid-cat && chmod 4755 /tmp/suid-cat")
    assert _root(sbx, "stat -c '%u %a' /tmp/suid-cat").stdout.split() == ["0", "4755"]
    host = os.lstat(_upper(userns_server, sbx.sandbox_id) / "tmp" / "suid-cat")
    assert host.st_mode & stat.S_ISUID           # the bit is there ...
    assert host.st_uid == BASE                   # ... but for an unprivileged owner
    # and the setuid binary still works inside (sudo relies on the same thing)
    assert sbx.commands.run("/tmp/suid-cat /proc/self/status | grep ^Uid", user="user").stdout.split()[1:3] == ["1000", "0"]


def test_root_cannot_give_files_to_unmapped_host_ids(userns_server: Server, sbx: Sandbox) -> None:
    _root(sbx, "echo x > /tmp/victim")
    for target in ("70000", str(BASE), "4294967294"):
        rc, out = _try_root(sbx, f"chown {target} /tmp/victim")
        assert rc != 0, out
        assert "Invalid argument" in out, out
    assert os.lstat(_upper(userns_server, sbx.sandbox_id) / "tmp" / "victim").st_uid == BASE
    # within the range chown works as before
    _root(sbx, "chown 1000:1000 /tmp/victim")
    assert os.lstat(_upper(userns_server, sbx.sandbox_id) / "tmp" / "victim").st_uid == BASE + 1000


def test_root_has_no_capability_over_host_objects(userns_server: Server, sbx: Sandbox) -> None:
    # canary: a root-only file on the host that the sandbox can see (envd's read-only runtime
    # dir is bind-mounted at /.sandlot). Host root reads it despite mode 0600 (DAC override);
    # sandbox root no longer can.
    canary = DATA_DIR / "envd" / "runtime" / f".userns-canary-{os.getpid()}"
    canary.write_text("host secret")
    os.chmod(canary, 0o600)
    try:
        rc, out = _try_root(sbx, f"cat /.sandlot/{canary.name}")
        assert rc != 0 and "Permission denied" in out, out
        assert "host secret" not in out
        # it is seen as nobody's; the rest of envd's runtime stays readable (envd runs from it)
        assert _root(sbx, f"stat -c %u /.sandlot/{canary.name}").stdout.strip() == "65534"
        assert _root(sbx, "test -r /.sandlot/usr/bin/python3.11 && echo ok").stdout.strip() == "ok"
    finally:
        canary.unlink()
    # CAP_MKNOD inside the userns makes no device node (host root's would reach host memory)
    rc, out = _try_root(sbx, "mknod /tmp/mem c 1 1")
    assert rc != 0 and "Operation not permitted" in out, out
    # CAP_NET_RAW inside is not CAP_NET_RAW over the host-owned netns: no raw sockets ...
    rc, out = _try_root(sbx, "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'")
    assert rc != 0 and "Operation not permitted" in out, out
    # ... yet ping works (ICMP echo sockets) and root still binds low ports
    assert "1 received" in _root(sbx, "ping -c 1 -W 2 127.0.0.1").stdout
    sbx.commands.run("python3 -m http.server 80 --bind 127.0.0.1", user="root", background=True)
    assert _root(sbx, "for i in $(seq 50); do curl -sf -o /dev/null localhost:80/ && echo up && break; "
                      "sleep 0.1; done").stdout.strip() == "up"
    # seen from the host, the sandbox's init (envd, root inside) is uid BASE in a user
    # namespace other than the host's: its CapEff is relative to that namespace, so over
    # the init namespace (host files, devices, the netns) it holds no capability at all
    init_pid = int((_upper(userns_server, sbx.sandbox_id).parents[1] / "init.pid").read_text())
    status = dict(ln.split(":", 1) for ln in Path(f"/proc/{init_pid}/status").read_text().splitlines())
    assert status["Uid"].split() == [str(BASE)] * 4
    assert status["Gid"].split() == [str(BASE)] * 4
    assert os.readlink(f"/proc/{init_pid}/ns/user") != os.readlink("/proc/self/ns/user")


def test_sudo_users_and_envd_file_owners(sbx: Sandbox) -> None:
    assert sbx.commands.run("id -un", user="user").stdout.strip() == "user"
    assert sbx.commands.run("id -un", user="root").stdout.strip() == "root"
    assert sbx.commands.run("sudo id -u", user="user").stdout.strip() == "0"
    assert sbx.commands.run("sudo -n true && echo ok", user="user").stdout.strip() == "ok"
    sbx.files.write("/home/user/mine.txt", "u", user="user")
    sbx.files.write("/root/theirs.txt", "r", user="root")
    assert sbx.files.get_info("/home/user/mine.txt").owner == "user"
    assert sbx.files.get_info("/root/theirs.txt", user="root").owner == "root"
    owners = {e.name: e.owner for e in sbx.files.list("/home/user", user="user")}
    assert owners["mine.txt"] == "user"
    # files from the (0-based, idmapped) template layers keep their owners
    assert sbx.commands.run("stat -c %U /etc/passwd /home/user /usr/bin/sudo", user="user").stdout.split() == \
        ["root", "user", "root"]


def test_owners_survive_pause_resume_and_fork(userns_server: Server) -> None:
    src = Sandbox.create(timeout=300)
    clones: list[Sandbox] = []
    try:
        src.files.write("/home/user/kept.txt", "kept", user="user")
        assert src.pause() is True
        resumed = Sandbox.connect(src.sandbox_id, timeout=300)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        assert resumed.files.get_info("/home/user/kept.txt").owner == "user"
        assert " ".join(resumed.commands.run("cat /proc/self/uid_map").stdout.split()) == f"0 {BASE} {RANGE.size}"
        assert resumed.commands.run("sudo id -u && touch /home/user/after-resume", user="user").stdout.strip() == "0"
        info = resumed.create_snapshot()
        clones.append(Sandbox.create(info.snapshot_id, timeout=120))
        clones.extend(resumed.fork(count=1, timeout=120))
        for clone in clones:
            assert " ".join(clone.commands.run("cat /proc/self/uid_map").stdout.split()) == f"0 {BASE} {RANGE.size}"
            assert clone.commands.run("stat -c %U /home/user/kept.txt /home/user/after-resume && "
                                      "touch /home/user/t && sudo id -u", user="user").stdout.split() == \
                ["user", "user", "0"]
            host = _upper(userns_server, clone.sandbox_id) / "home" / "user" / "kept.txt"
            assert os.lstat(host).st_uid == BASE + 1000
            assert os.lstat(_upper(userns_server, clone.sandbox_id) / "etc" / "hosts").st_uid == BASE
        Sandbox.delete_snapshot(info.snapshot_id)
    finally:
        for clone in clones:
            clone.kill()
        src.kill()


@pytest.mark.slow
def test_sandbox_paused_without_userns_resumes_as_it_was(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A sandbox paused by a server without user namespaces (or before them) comes back as
    it was under a server that has them, and new sandboxes there get the range."""
    srv = Server(workdir=tmp_path_factory.mktemp("userns-upgrade"), api_key=ids.new_api_key(),
                 instance=unique_instance("o"), subnet=unique_subnet(8),
                 extra_env={"SANDLOT_USERNS": "false"})
    srv.start()
    try:
        with sdk_pointed_at(srv):
            old = Sandbox.create(timeout=300)
            old.files.write("/home/user/old.txt", "old", user="user")
            assert " ".join(old.commands.run("cat /proc/self/uid_map").stdout.split()) == "0 0 4294967295"
            assert old.pause() is True
        srv.stop()
        srv.extra_env["SANDLOT_USERNS"] = "true"
        srv.start()
        with sdk_pointed_at(srv):
            resumed = Sandbox.connect(old.sandbox_id, timeout=300)
            assert resumed.files.read("/home/user/old.txt") == "old"
            assert " ".join(resumed.commands.run("cat /proc/self/uid_map").stdout.split()) == "0 0 4294967295"
            assert os.lstat(_upper(srv, old.sandbox_id) / "home" / "user" / "old.txt").st_uid == 1000
            new = Sandbox.create(timeout=120)
            assert " ".join(new.commands.run("cat /proc/self/uid_map").stdout.split()) == f"0 {BASE} {RANGE.size}"
            new.kill()
            resumed.kill()
    finally:
        srv.reset()


@pytest.mark.slow
def test_template_build_steps_run_in_the_range_and_layers_stay_0_based(userns_server: Server,
                                                                     tmp_path: Path) -> None:
    """A RUN step is tenant code: it runs as the range's root too. Its layer is stored
    0-based (set-id bits kept), so sandboxes of the template see the owners the step made,
    and a COPY'd 0600 file of the context is readable by the step's root."""
    from e2b import Template

    (tmp_path / "secret.txt").write_text("ctx")
    os.chmod(tmp_path / "secret.txt", 0o600)
    tag = ids.new_api_key()[-10:]
    tpl = (Template(file_context_path=str(tmp_path)).from_template("base").set_user("root")
           .run_cmd(f"cat /proc/self/uid_map > /opt/build-map && mkdir -p /opt/owned && chown 1000:1000 /opt/owned "
                    f"&& cp /bin/cat /opt/suid && chmod 4755 /opt/suid && echo {tag} > /opt/tag")
           .copy("secret.txt", "/opt/secret.txt", user="user"))
    name = f"userns-{tag}"
    Template.build(tpl, name, cpu_count=1, memory_mb=512)
    s = Sandbox.create(name, timeout=120)
    try:
        assert " ".join(s.commands.run("cat /opt/build-map").stdout.split()) == f"0 {BASE} {RANGE.size}"
        assert s.commands.run("stat -c '%U %a' /opt/owned /opt/suid /opt/secret.txt").stdout.split() == \
            ["user", "755", "root", "4755", "user", "600"]
        assert s.commands.run("cat /opt/secret.txt", user="user").stdout == "ctx"
        assert s.commands.run("cat /opt/tag").stdout.strip() == tag
    finally:
        s.kill()
    # on the host, the committed layer holding /opt/tag is 0-based
    layers = [p for p in (DATA_DIR / "templates" / "layers").glob("*/fs/opt/tag") if tag in p.read_text()]
    assert layers, "layer not found"
    opt = layers[0].parent
    assert (os.lstat(opt / "owned").st_uid, os.lstat(opt / "suid").st_uid) == (1000, 0)
    assert stat.S_IMODE(os.lstat(opt / "suid").st_mode) == 0o4755

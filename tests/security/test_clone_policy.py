"""Snapshots and forks keep the source's network policy and public-traffic settings.

The source is a no-internet sandbox whose ports need the traffic token. Its clones (from a
snapshot, from a fork) must have no internet either — not even for an instant after the
restore: a process in the source keeps trying to reach the test host — and must still
require their own traffic token. The canary is the test host's log (``labhost.py``), an
address the operator allow-lists, so an open sandbox reaching it proves the path is real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from e2b import CommandExitException, Sandbox

from tests.e2e.server import Server, data_dir
from tests.security.labhost import HTTP_PORT, UDP_PORT, LabHost, lab_server

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root"), pytest.mark.slow]

APP_PORT = 8000
KNOCK = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while True:
    try:
        s.sendto(b"/attack-window", (sys.argv[1], {UDP_PORT}))
    except OSError:
        pass
    time.sleep(0.005)
"""


@pytest.fixture(scope="module")
def clone_server(tmp_path_factory: pytest.TempPathFactory, host: LabHost) -> Iterator[Server]:
    with lab_server(tmp_path_factory.mktemp("sandlot-clone"), "c", host) as srv:
        yield srv


@pytest.fixture
def made(clone_server: Server) -> Iterator[list[Sandbox]]:
    sandboxes: list[Sandbox] = []
    yield sandboxes
    for sbx in sandboxes:
        try:
            sbx.kill()
        except Exception:
            pass


def reaches(sbx: Sandbox, host: LabHost, path: str) -> bool:
    try:
        sbx.commands.run(f"curl -sS -m 3 http://{host.allowed}:{HTTP_PORT}{path}", timeout=20)
    except CommandExitException:
        return False
    return True


def port_status(server: Server, sbx: Sandbox, token: str | None) -> int:
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(APP_PORT)}
    if token is not None:
        headers["e2b-traffic-access-token"] = token
    return httpx.get(f"{server.url}/", headers=headers, timeout=30).status_code


def private_closed_source(host: LabHost, made: list[Sandbox]) -> Sandbox:
    src = Sandbox.create(timeout=300, allow_internet_access=False, network={"allow_public_traffic": False})
    made.append(src)
    src.commands.run(f"python3 -m http.server {APP_PORT} --bind 0.0.0.0 >/dev/null 2>&1", background=True)
    # keeps sending to the test host (a datagram every 5 ms): the moment a clone runs with an
    # open network, the test host logs it
    src.files.write("/tmp/knock.py", KNOCK)
    src.commands.run(f"python3 /tmp/knock.py {host.allowed} >/dev/null 2>&1", background=True)
    src.commands.run(f"for i in $(seq 100); do curl -s -o /dev/null localhost:{APP_PORT} && exit 0; sleep 0.1; done; "
                     "exit 1", timeout=30)
    return src


def assert_kept(clone: Sandbox, server: Server, host: LabHost, barrier: str, made: list[Sandbox]) -> None:
    assert not reaches(clone, host, f"/attack-{barrier}")
    token = clone.traffic_access_token
    assert token, "a clone of a private sandbox has a traffic token"
    assert port_status(server, clone, None) == 403
    assert port_status(server, clone, token) == 200
    # the barrier: an open sandbox reaches the test host, so the path exists and the log is current
    opener = Sandbox.create(timeout=120)
    made.append(opener)
    assert reaches(opener, host, f"/legit-{barrier}")
    host.wait_for(f"/legit-{barrier}")
    assert not [line for line in host.lines() if "/attack-" in line], host.lines()


def test_snapshot_clone_keeps_no_internet_and_private_ports(clone_server: Server, host: LabHost, made) -> None:
    src = private_closed_source(host, made)
    snap = src.create_snapshot()
    clone = Sandbox.create(snap.snapshot_id, timeout=120)
    made.append(clone)
    assert clone.get_info().sandbox_id == clone.sandbox_id
    assert_kept(clone, clone_server, host, "snapshot", made)
    assert clone.traffic_access_token != src.traffic_access_token   # its own token


def test_fork_keeps_no_internet_and_private_ports(clone_server: Server, host: LabHost, made) -> None:
    src = private_closed_source(host, made)
    forks = list(src.fork(count=1, timeout=120))
    made.extend(forks)
    assert_kept(forks[0], clone_server, host, "fork", made)


def test_explicit_create_options_override_field_by_field(clone_server: Server, host: LabHost, made) -> None:
    """As on any create, options given with the snapshot id apply; the rest stays the source's."""
    src = Sandbox.create(timeout=300, allow_internet_access=False, network={"allow_public_traffic": False})
    made.append(src)
    src.commands.run(f"python3 -m http.server {APP_PORT} --bind 0.0.0.0 >/dev/null 2>&1", background=True)
    src.commands.run(f"for i in $(seq 100); do curl -s -o /dev/null localhost:{APP_PORT} && exit 0; sleep 0.1; done; "
                     "exit 1", timeout=30)
    snap = src.create_snapshot()
    opened = Sandbox.create(snap.snapshot_id, timeout=120, allow_internet_access=True)
    made.append(opened)
    assert reaches(opened, host, "/legit-override")           # internet: explicitly asked for
    assert port_status(clone_server, opened, None) == 403     # ports: still the source's (private)
    assert port_status(clone_server, opened, opened.traffic_access_token) == 200
    public = Sandbox.create(snap.snapshot_id, timeout=120, network={"allow_public_traffic": True})
    made.append(public)
    assert public.traffic_access_token is None
    assert port_status(clone_server, public, None) == 200
    assert not reaches(public, host, "/attack-public-override")   # egress: still the source's
    host.wait_for("/legit-override")
    assert not [line for line in host.lines() if "/attack-public-override" in line]


def test_a_dying_closed_sandbox_never_gets_the_internet(clone_server: Server, host: LabHost, made) -> None:
    """Killing a sandbox closes its egress before its processes die (it used to open it)."""
    doomed = private_closed_source(host, made)
    doomed.kill()
    opener = Sandbox.create(timeout=120)
    made.append(opener)
    assert reaches(opener, host, "/legit-after-kill")
    host.wait_for("/legit-after-kill")
    assert not [line for line in host.lines() if "/attack-" in line], host.lines()


def test_a_sandbox_resumed_after_a_host_reboot_keeps_its_policy_from_the_first_instant(
        clone_server: Server, host: LabHost, made) -> None:
    """A reboot takes the netns and the nft table; the slot made again for the paused
    sandbox is closed until the resume applies its policy (it used to be open)."""
    src = private_closed_source(host, made)
    src.pause()
    clone_server.process.send_signal(signal.SIGKILL)   # then what a reboot does to the host
    clone_server.process.wait()
    clone_server.process = None
    sdir = data_dir() / "runtime" / clone_server.instance / "sandboxes" / src.sandbox_id
    subprocess.run(["ip", "netns", "del", json.loads((sdir / "runtime.json").read_text())["netns"]], check=True)
    subprocess.run(["umount", str(sdir / "disk")], check=True)
    for family in ("inet", "arp"):
        subprocess.run(["nft", "delete", "table", family, clone_server.instance], check=True)
    shutil.rmtree(clone_server.workdir / "run")
    clone_server.start()
    resumed = Sandbox.connect(src.sandbox_id, timeout=120)
    assert not reaches(resumed, host, "/attack-resumed")
    assert port_status(clone_server, resumed, None) == 403
    opener = Sandbox.create(timeout=120)
    made.append(opener)
    assert reaches(opener, host, "/legit-reboot")
    host.wait_for("/legit-reboot")
    assert not [line for line in host.lines() if "/attack-" in line], host.lines()

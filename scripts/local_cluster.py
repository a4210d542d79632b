"""A Sandlot cluster on one machine, as separate hosts would be (``scripts/local-cluster.sh``).

``up N``: a throw-away PostgreSQL 15 (Debian's ``postgresql-15``) in the cluster dir, N node agents
(``sandlot node``) each in its own network namespace — a veth pair to the host with its own link
subnet ``10.250.<k>.0/24`` (host ``.1``, node ``.2``), a default route via the host side, its own data
dir, ``SANDLOT_INSTANCE``, sandbox subnet and runc state dir — and two ``sandlot api`` instances on
host loopback. Nodes share the blob store (``file://<cluster dir>/blobs``) and the images dir (the
normal data dir, whose base rootfs and envd runtime ``sandlot setup`` built), and the keys a
deployment would hand every host as one Secret (secrets, webhooks, warm pool, volume tokens, Prime
gateway, egress CA, workload identity). The host forwards and masquerades the link subnets (an nft
table of the cluster's own) so template builds on nodes reach the package mirrors.

Everything ``up`` makes is recorded in ``<cluster dir>/state.json`` as it is made, so ``down`` can
undo a half-finished ``up`` as well: node agents are stopped, then each node's instance is reset
inside its namespace (``sandlot reset``: containers, mounts, cgroups, sandbox netns), then the
namespaces, the nft table and PostgreSQL go, and the cluster dir is deleted.

Node agents run under ``nsenter --net`` (only the network namespace): ``ip netns exec`` would also
unshare the mount namespace and remount ``/sys``, hiding the node's overlay/runc mounts from the
host (where ``sandlot reset``, runc's state and the tests look for them).

Run as root with the repo's venv interpreter; the last line ``up`` prints is the SDK environment.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SANDLOT = BIN / "sandlot"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
NODE_PORT = 3000
HEARTBEAT_S = "2"
LINK_PREFIX = "10.250"
SHARED_KEYS = ("secrets.key", "webhooks.key", "warm-pool.key", "volume-tokens.key", "prime-gateway.key")
SHARED_CA_FILES = ("ca.crt", "ca.key", "identity.key")
CLUSTER_VARS = ("SANDLOT_DATABASE_URL", "SANDLOT_NODE_TOKEN", "SANDLOT_NODE_ID", "SANDLOT_NODE_ADDRESS",
                "SANDLOT_NODE_HEARTBEAT_S", "SANDLOT_BLOB_URL", "SANDLOT_IMAGES_DIR", "SANDLOT_ADMIN_TOKEN",
                "SANDLOT_API_KEY", "SANDLOT_DATA_DIR", "SANDLOT_INSTANCE", "SANDLOT_SANDBOX_SUBNET",
                "SANDLOT_RUNTIME_STATE_DIR", "SANDLOT_HOST", "SANDLOT_PORT", "SANDLOT_LXCFS_PATH", "SANDLOT_ROLE")


class ClusterError(RuntimeError):
    """Something the operator must fix (said in one line)."""


def cluster_dir() -> Path:
    return Path(os.environ.get("SANDLOT_CLUSTER_DIR") or "/tmp/sandlot-cluster")


def images_dir() -> Path:
    """The normal data dir: its base rootfs and envd runtime are what every node boots from."""
    return Path(os.environ.get("SANDLOT_IMAGES_DIR") or os.environ.get("SANDLOT_DATA_DIR") or "/var/lib/sandlot")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- state -----------------------------------------------------------------------------------------

def state_path(root: Path) -> Path:
    return root / "state.json"


def load_state(root: Path) -> dict[str, Any]:
    path = state_path(root)
    if not path.exists():
        raise ClusterError(f"no cluster in {root} (no state.json)")
    return dict(json.loads(path.read_text()))


def save_state(root: Path, state: dict[str, Any]) -> None:
    path = state_path(root)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # holds the tokens and passwords
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2)
    os.replace(tmp, path)


# --- small helpers ---------------------------------------------------------------------------------

def run(argv: list[str], *, check: bool = True, stdin: str | None = None, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:4])}… failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def taken_link_octets() -> set[int]:
    out = run([IP, "-4", "-o", "addr", "show"]).stdout
    return {int(m.group(1)) for m in re.finditer(rf"inet {re.escape(LINK_PREFIX)}\.(\d+)\.", out)}


def pick_link_octets(count: int) -> list[int]:
    """Third octets of ``10.250.X.0/24`` free on this host (another cluster may be up)."""
    taken = taken_link_octets()
    free = [k for k in range(1, 255) if k not in taken]
    if len(free) < count:
        raise ClusterError("no free 10.250.X.0/24 link subnets left on this host")
    return free[:count]


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours is not alive; /proc tells
    with contextlib.suppress(OSError):
        if " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]:
            return False
    return True


def stop_pid(pid: int | None, sig: int = signal.SIGINT, timeout: float = 60) -> None:
    """``sig`` to the process group the agent leads (it was started in its own session), then KILL."""
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)


def has_command(name: str) -> bool:
    done = subprocess.run([str(SANDLOT), name, "--help"], capture_output=True, timeout=60)
    return done.returncode == 0


# --- PostgreSQL ------------------------------------------------------------------------------------

def as_postgres(argv: list[str]) -> None:
    run(["runuser", "-u", "postgres", "--", *argv], timeout=120)


def start_postgres(root: Path, state: dict[str, Any], listen: list[str], allow: list[str]) -> None:
    if not (PG_BIN / "initdb").exists():
        raise ClusterError("postgresql-15 is not installed (make deps installs it)")
    pg = pwd.getpwnam("postgres")
    # its own dir in /tmp: the cluster dir may sit below dirs the postgres user can't enter (pytest's tmp)
    pg_root = Path(tempfile.mkdtemp(prefix="sandlot-cluster-pg-"))
    pg_root.chmod(0o700)
    os.chown(pg_root, pg.pw_uid, pg.pw_gid)
    password = secrets.token_hex(16)
    pwfile = pg_root / "pw"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    port = free_port()
    state["postgres"] = {"root": str(pg_root), "port": port, "password": password, "started": False}
    save_state(root, state)
    data = pg_root / "data"
    as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "sandlot", "--pwfile", str(pwfile),
                 "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
    pwfile.unlink()
    with open(data / "pg_hba.conf", "a") as hba:   # the nodes' link subnets, password (scram) only
        for cidr in allow:
            hba.write(f"host all sandlot {cidr} scram-sha-256\n")
    state["postgres"]["started"] = True
    save_state(root, state)
    as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(pg_root / "postgres.log"), "-w", "-t", "60",
                 "-o", f"-c listen_addresses={','.join(listen)} -c port={port} -c unix_socket_directories={pg_root} "
                       "-c fsync=off -c max_connections=300",
                 "start"])
    deadline = time.monotonic() + 30
    while True:
        done = run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "sandlot", "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE sandlot"], check=False,
                   env=dict(os.environ, PGPASSWORD=password))
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"PostgreSQL did not accept connections: {done.stderr[-1500:]}")
        time.sleep(0.2)


def stop_postgres(pg: dict[str, Any]) -> None:
    if pg.get("started"):
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(Path(pg["root"]) / "data"), "-m", "fast", "-w", "stop"])
    shutil.rmtree(pg["root"], ignore_errors=True)


def database_url(state: dict[str, Any], host: str) -> str:
    pg = state["postgres"]
    return f"postgresql+psycopg://sandlot:{pg['password']}@{host}:{pg['port']}/sandlot"


# --- host networking -------------------------------------------------------------------------------

def make_namespace(node: dict[str, Any]) -> None:
    ns, host_if, node_if = node["netns"], node["host_veth"], node["node_veth"]
    run([IP, "netns", "add", ns])
    run([IP, "-batch", "-"], stdin=(
        f"link add {host_if} type veth peer name {node_if} netns {ns}\n"
        f"addr add {node['host_ip']}/24 dev {host_if}\n"
        f"link set {host_if} up\n"))
    run([IP, "-n", ns, "-batch", "-"], stdin=(
        "link set lo up\n"
        f"addr add {node['node_ip']}/24 dev {node_if}\n"
        f"link set {node_if} up\n"
        f"route add default via {node['host_ip']}\n"))


def remove_namespace(node: dict[str, Any]) -> None:
    run([IP, "netns", "del", node["netns"]], check=False)
    run([IP, "link", "del", node["host_veth"]], check=False)   # gone with the netns; in case the netns wasn't made


def nft_rules(table: str, nodes: list[dict[str, Any]]) -> str:
    """Forward the nodes' traffic and masquerade their link subnets on the way out; nothing else.
    The table is the cluster's own (the host's other tables are never touched)."""
    ifs = ", ".join(f'"{n["host_veth"]}"' for n in nodes)
    subnets = ", ".join(n["link_subnet"] for n in nodes)
    return f"""table inet {table} {{
  chain forward {{
    type filter hook forward priority filter - 5; policy accept;
    iifname {{ {ifs} }} accept
    oifname {{ {ifs} }} ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {{ {subnets} }} oifname != {{ {ifs} }} masquerade
  }}
}}
"""


def install_nft(table: str, nodes: list[dict[str, Any]]) -> None:
    run(["nft", "-f", "-"], stdin=nft_rules(table, nodes))


def remove_nft(table: str) -> None:
    run(["nft", "delete", "table", "inet", table], check=False)


# --- processes -------------------------------------------------------------------------------------

def base_env() -> dict[str, str]:
    """The caller's environment without the cluster's own variables (each process gets its own)."""
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARS and k != "SANDLOT_CLUSTER_DIR"}
    env.setdefault("SANDLOT_CODE_INTERPRETER_TEMPLATE", "false")
    env.setdefault("SANDLOT_MCP_GATEWAY_TEMPLATE", "false")
    return env


def node_env(state: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
    env = base_env()
    env.update({
        "SANDLOT_DATABASE_URL": database_url(state, node["host_ip"]),
        "SANDLOT_NODE_TOKEN": state["node_token"],
        "SANDLOT_NODE_ID": node["node_id"],
        "SANDLOT_NODE_ADDRESS": f"{node['node_ip']}:{NODE_PORT}",
        "SANDLOT_NODE_HEARTBEAT_S": HEARTBEAT_S,
        "SANDLOT_BLOB_URL": f"file://{state['root']}/blobs",
        "SANDLOT_IMAGES_DIR": state["images_dir"],
        "SANDLOT_LXCFS_PATH": str(Path(state["images_dir"]) / "lxcfs"),   # one lxcfs per machine
        "SANDLOT_ADMIN_TOKEN": state["admin_token"],
        "SANDLOT_API_KEY": state["api_key"],
        "SANDLOT_DATA_DIR": node["data_dir"],
        "SANDLOT_INSTANCE": node["instance"],
        "SANDLOT_SANDBOX_SUBNET": node["sandbox_subnet"],
        "SANDLOT_RUNTIME_STATE_DIR": node["run_dir"],
        "SANDLOT_HOST": node["node_ip"],
        "SANDLOT_PORT": str(NODE_PORT),
    })
    return env


def api_env(state: dict[str, Any], api: dict[str, Any]) -> dict[str, str]:
    env = base_env()
    env.update({
        "SANDLOT_DATABASE_URL": database_url(state, "127.0.0.1"),
        "SANDLOT_NODE_TOKEN": state["node_token"],
        "SANDLOT_NODE_HEARTBEAT_S": HEARTBEAT_S,
        "SANDLOT_BLOB_URL": f"file://{state['root']}/blobs",
        "SANDLOT_IMAGES_DIR": state["images_dir"],
        "SANDLOT_ADMIN_TOKEN": state["admin_token"],
        "SANDLOT_API_KEY": state["api_key"],
        "SANDLOT_DATA_DIR": api["data_dir"],
        "SANDLOT_INSTANCE": api["instance"],
        "SANDLOT_HOST": "127.0.0.1",
        "SANDLOT_PORT": str(api["port"]),
    })
    return env


def spawn(argv: list[str], env: dict[str, str], logfile: Path) -> int:
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)
    return proc.pid


def node_argv(state: dict[str, Any], node: dict[str, Any]) -> list[str]:
    return [NSENTER, f"--net=/run/netns/{node['netns']}", "--", str(SANDLOT), state["node_command"],
            "--host", node["node_ip"], "--port", str(NODE_PORT), "--log-level", "info"]


def wait_healthy(url: str, pid: int, logfile: Path, headers: dict[str, str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ClusterError(f"{url}: the process exited; log tail:\n{tail(logfile)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", headers=headers, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ClusterError(f"{url} did not become healthy in {timeout:.0f} s; log tail:\n{tail(logfile)}")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def start_node(state: dict[str, Any], index: int, wait: bool = True) -> None:
    node = state["nodes"][index]
    if alive(node.get("pid")):
        raise ClusterError(f"node {node['node_id']} is already running (pid {node['pid']})")
    logfile = Path(node["dir"]) / "node.log"
    node["pid"] = spawn(node_argv(state, node), node_env(state, node), logfile)
    save_state(Path(state["root"]), state)
    if wait:
        wait_node(state, index)


def wait_node(state: dict[str, Any], index: int) -> None:
    node = state["nodes"][index]
    wait_healthy(f"http://{node['node_ip']}:{NODE_PORT}", node["pid"], Path(node["dir"]) / "node.log",
                 {"X-Sandlot-Node-Token": state["node_token"]})


def reset_node(state: dict[str, Any], node: dict[str, Any]) -> None:
    """``sandlot reset`` of the node's instance inside its netns (its sandboxes' nft table and veths
    live there): containers, mounts, cgroups and sandbox netns of the instance go."""
    if not Path(f"/run/netns/{node['netns']}").exists() or not Path(node["data_dir"]).exists():
        return
    done = run([NSENTER, f"--net=/run/netns/{node['netns']}", "--", str(SANDLOT), "reset", "--yes"],
               env=node_env(state, node), check=False, timeout=300)
    if done.returncode != 0:
        log(f"warning: sandlot reset of {node['node_id']} failed: {done.stderr.strip()[-800:]}")


# --- up / down -------------------------------------------------------------------------------------

def shared_seed(root: Path) -> Path:
    """The keys every host of a deployment gets from one Secret: made once, copied into each data dir."""
    from sandlot.egress.ca import CA_DIR, EgressCA
    from sandlot.egress.identity import IdentityIssuer
    from sandlot.secret_keys import data_dir_key

    seed = root / "seed"
    for name in SHARED_KEYS:
        data_dir_key(seed, name)
    EgressCA(seed, None)
    _ = IdentityIssuer(seed, "http://127.0.0.1", "sandlot.local").key
    for entry in (seed / CA_DIR).iterdir():   # only the CA and identity keys (bundles are derived per data dir)
        if entry.name not in SHARED_CA_FILES:
            entry.unlink()
    return seed


def seed_data_dir(seed: Path, data_dir: Path) -> None:
    shutil.copytree(seed, data_dir, dirs_exist_ok=True)


def check_images(images: Path) -> None:
    from sandlot.settings import Settings

    settings = Settings(data_dir=images, images_dir=images)
    missing = [p for p in (settings.base_dir, settings.envd_runtime_dir) if not p.exists()]
    if missing:
        raise ClusterError(f"{', '.join(map(str, missing))} missing: run `make setup` (or `sandlot setup`) first")


def up(count: int) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (namespaces, runc, nftables)")
    if not 1 <= count <= 9:
        raise ClusterError("1 to 9 nodes")
    root = cluster_dir()
    if state_path(root).exists():
        raise ClusterError(f"a cluster is already up in {root}: `scripts/local-cluster.sh down` first "
                           "(or set SANDLOT_CLUSTER_DIR for a second one)")
    images = images_dir()
    check_images(images)
    node_command = "node" if has_command("node") else "serve"
    api_command = "api" if has_command("api") else None
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)   # node data dirs live below: sandboxes' root (a userns uid) must traverse it
    for parent in root.parents:
        if not parent.stat().st_mode & 0o001:
            raise ClusterError(f"{parent} is not searchable by other users, so sandboxes (user namespaces) "
                               "can't reach node data dirs below it: pick another SANDLOT_CLUSTER_DIR")
    cid = secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(2))
    state: dict[str, Any] = {
        "root": str(root), "cluster_id": cid, "images_dir": str(images), "nft_table": f"sandlot_lc_{cid}",
        "node_command": node_command, "api_command": api_command,
        "api_key": "e2b_" + secrets.token_hex(20), "admin_token": secrets.token_urlsafe(24),
        "node_token": secrets.token_urlsafe(32), "nodes": [], "apis": [],
    }
    save_state(root, state)
    try:
        lock = open("/run/lock/sandlot-local-cluster.lock", "w")   # two clusters coming up pick distinct links
        fcntl.flock(lock, fcntl.LOCK_EX)
        for i, octet in enumerate(pick_link_octets(count), start=1):
            node_dir = root / "nodes" / f"n{i}"
            node = {
                "node_id": f"node-{i}", "netns": f"sandlot-{cid}-n{i}", "host_veth": f"lc{cid}h{i}",
                "node_veth": f"lc{cid}n{i}", "link_subnet": f"{LINK_PREFIX}.{octet}.0/24",
                "host_ip": f"{LINK_PREFIX}.{octet}.1", "node_ip": f"{LINK_PREFIX}.{octet}.2",
                "instance": f"k{cid}n{i}", "sandbox_subnet": f"10.22{i}.0.0/16", "dir": str(node_dir),
                "data_dir": str(node_dir / "data"), "run_dir": str(node_dir / "run"), "pid": None,
            }
            state["nodes"].append(node)
            save_state(root, state)
            node_dir.mkdir(parents=True)
            make_namespace(node)
        lock.close()
        install_nft(state["nft_table"], state["nodes"])
        state["nft_installed"] = True
        save_state(root, state)
        start_postgres(root, state, ["127.0.0.1", *(n["host_ip"] for n in state["nodes"])],
                       [n["link_subnet"] for n in state["nodes"]])
        (root / "blobs").mkdir()
        seed = shared_seed(root)
        for node in state["nodes"]:
            seed_data_dir(seed, Path(node["data_dir"]))
        # together: the migrations run under a PostgreSQL advisory lock, so one node migrates
        for index in range(count):
            start_node(state, index, wait=False)
        for index in range(count):
            wait_node(state, index)
        if api_command:
            for a in (1, 2):
                api_dir = root / "apis" / f"a{a}"
                api: dict[str, Any] = {"dir": str(api_dir), "data_dir": str(api_dir / "data"), "port": free_port(),
                       "instance": f"k{cid}a{a}", "pid": None}
                state["apis"].append(api)
                api_dir.mkdir(parents=True)
                seed_data_dir(seed, Path(api["data_dir"]))
                api["pid"] = spawn([str(SANDLOT), api_command, "--host", "127.0.0.1", "--port", str(api["port"]),
                                    "--log-level", "info"], api_env(state, api), api_dir / "api.log")
                save_state(root, state)
            for api in state["apis"]:
                wait_healthy(f"http://127.0.0.1:{api['port']}", api["pid"], Path(api["dir"]) / "api.log", {})
    except BaseException:
        log(f"up failed; tearing down what was made (logs stay in {root} until then):")
        for node in state["nodes"]:
            if node.get("pid") and not alive(node["pid"]):
                log(f"--- {node['node_id']} log tail:\n{tail(Path(node['dir']) / 'node.log')}")
        down(state)
        raise
    return state


def env_line(state: dict[str, Any]) -> str:
    if state["apis"]:
        url = f"http://127.0.0.1:{state['apis'][0]['port']}"
    else:   # stand-in until `sandlot api` exists: node 1 directly (a node answers only with the node token)
        url = f"http://{state['nodes'][0]['node_ip']}:{NODE_PORT}"
    return f"E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY={state['api_key']} " \
           f"SANDLOT_ADMIN_TOKEN={state['admin_token']}"


def down(state: dict[str, Any] | None = None) -> None:
    root = Path(state["root"]) if state else cluster_dir()
    if state is None:
        state = load_state(root)
    for api in state.get("apis", []):
        stop_pid(api.get("pid"), signal.SIGINT, timeout=30)
    for node in state.get("nodes", []):   # a clean stop first: the agent closes its pools and servers
        with contextlib.suppress(ProcessLookupError):
            if alive(node.get("pid")):
                os.kill(node["pid"], signal.SIGINT)
    for node in state.get("nodes", []):
        stop_pid(node.get("pid"), signal.SIGINT, timeout=60)
    if state.get("postgres", {}).get("started"):
        for node in state.get("nodes", []):   # while PostgreSQL runs: reset reads the sandbox rows
            reset_node(state, node)
    for node in state.get("nodes", []):
        remove_namespace(node)
    if state.get("nft_installed"):
        remove_nft(state["nft_table"])
    if "postgres" in state:
        stop_postgres(state["postgres"])
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster.sh", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start PostgreSQL, N node agents and two API instances")
    p_up.add_argument("nodes", type=int, nargs="?", default=3)
    sub.add_parser("down", help="stop everything and remove the cluster's host traces")
    sub.add_parser("env", help="print the SDK environment line again")
    sub.add_parser("status", help="print the cluster's state (without secrets)")
    for name, what in (("stop-node", "stop a node agent cleanly (SIGINT)"), ("kill-node", "SIGKILL a node agent"),
                       ("start-node", "start a stopped node agent again")):
        p = sub.add_parser(name, help=what)
        p.add_argument("node", type=int, help="1-based node number")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed `up` still tears down what it made
    try:
        if args.command == "up":
            state = up(args.nodes)
            for node in state["nodes"]:
                log(f"{node['node_id']}: {node['node_ip']}:{NODE_PORT} netns {node['netns']} "
                    f"instance {node['instance']} sandboxes {node['sandbox_subnet']} ({state['node_command']})")
            for api in state["apis"]:
                log(f"api: http://127.0.0.1:{api['port']}")
            if not state["apis"]:
                log("`sandlot api` is not available in this checkout: the line below points at node 1 directly")
            print(env_line(state), flush=True)
        elif args.command == "down":
            down()
        elif args.command == "env":
            print(env_line(load_state(cluster_dir())))
        elif args.command == "status":
            state = load_state(cluster_dir())
            for key in ("api_key", "admin_token", "node_token"):
                state.pop(key, None)
            state.get("postgres", {}).pop("password", None)
            for item in state["nodes"] + state["apis"]:
                item["alive"] = alive(item.get("pid"))
            print(json.dumps(state, indent=2))
        else:
            state = load_state(cluster_dir())
            index = args.node - 1
            if not 0 <= index < len(state["nodes"]):
                raise ClusterError(f"no node {args.node}")
            if args.command == "start-node":
                start_node(state, index)
            else:
                stop_pid(state["nodes"][index].get("pid"),
                         signal.SIGKILL if args.command == "kill-node" else signal.SIGINT)
    except ClusterError as exc:
        log(f"local-cluster: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

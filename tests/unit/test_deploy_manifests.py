"""deploy/ is checked offline: every Kubernetes manifest validates against the schemas of current
Kubernetes versions (``kubernetes-validate``, strict: unknown fields fail) and deploys the real
roles (``sandlot api`` Deployment, ``sandlot node`` DaemonSet) with the stance the README states;
the node's environment, expanded as the kubelet would, gives the settings a node agent needs; the
key-install init script and ``deploy/make-keys.sh`` produce keys Sandlot loads as its own; the
node's readiness probe sends the node token; the API pod, run as deployed (uid 10001, no
capabilities) on a real PostgreSQL, becomes ready once a node heartbeats; the systemd units pass
``systemd-analyze verify``."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from sandlot.egress.ca import EgressCA
from sandlot.egress.identity import IdentityIssuer
from sandlot.secret_keys import data_dir_key
from sandlot.settings import Settings
from sandlot.store import nodes as node_store
from sandlot.store.database import Database
from tests import postgres

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes release still maintained upstream at the time of writing, and the newest
the installed package knows."""
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
SENSITIVE = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY|ACCESS_KEY|DATABASE_URL|BLOB_URL")
"""Env names whose values are secrets (URLs carry passwords or bucket names): by reference only."""
SHARED_KEYS = ("secrets.key", "webhooks.key", "warm-pool.key", "volume-tokens.key", "prime-gateway.key")
CA_FILES = ("ca.crt", "ca.key", "identity.key")
UNITS = ("sandlot.service", "sandlot-api.service", "sandlot-node.service")
SECRETS = {"SANDLOT_DATABASE_URL": "postgresql+psycopg://u:p@db:5432/sandlot", "SANDLOT_NODE_TOKEN": "t",
           "SANDLOT_BLOB_URL": "s3://b/p?endpoint=http://s3:9000", "SANDLOT_ADMIN_TOKEN": "a",
           "SANDLOT_API_KEY": "e2b_" + "0" * 40}
"""Stand-ins for the Secret's values (the S3 credentials left out: they are optional)."""


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCUMENTS = _documents()


def _doc(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in DOCUMENTS if doc["kind"] == kind and doc["metadata"]["name"] == name)


def _pod(kind: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = _doc(kind, name)["spec"]["template"]["spec"]
    return pod


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _expand(env: list[dict[str, Any]], downward: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: in order, ``$(VAR)`` of earlier entries
    expanded, field refs from ``downward``, secret refs from ``secrets`` (absent optional ones left out)."""
    out: dict[str, str] = {}
    for entry in env:
        if "value" in entry:
            out[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m[1], m[0]), entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            out[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets:
                out[entry["name"]] = secrets[ref["key"]]
            else:
                assert ref.get("optional"), f"{entry['name']}: no value for {ref}"
    return out


# --- the manifests are valid Kubernetes objects ------------------------------------------------

def test_the_manifests_are_there() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS}
    assert {("Deployment", "sandlot-api"), ("Service", "sandlot-api"), ("DaemonSet", "sandlot-node"),
            ("StatefulSet", "sandlot-postgres"), ("Service", "sandlot-postgres"), ("Namespace", "sandlot"),
            ("Secret", "sandlot"), ("Secret", "sandlot-blobs")} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_manifest_validates(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The check is not vacuous: a typo'd field fails strict validation."""
    doc = _doc("DaemonSet", "sandlot-node")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"privileged": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


# --- they run the real roles ---------------------------------------------------------------------

def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The settings a process with exactly this ``SANDLOT_*`` environment reads."""
    for name in list(os.environ):
        if name.startswith("SANDLOT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_api_tier_is_sandlot_api(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _doc("Deployment", "sandlot-api")
    assert deployment["spec"]["replicas"] == 2
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert api["command"] == ["sandlot", "api"]
    probe = api["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health"
    port = next(p for p in api["ports"] if p["name"] == probe["port"])["containerPort"]
    settings = _settings(monkeypatch, _expand(api["env"], {}, SECRETS))
    assert settings.port == port and settings.host == "0.0.0.0"
    assert settings.node_token == "t" and settings.effective_database_url.startswith("postgresql+psycopg://")
    assert settings.userns is False   # a non-root router can't hand its data dir to a sandbox id range
    service = _doc("Service", "sandlot-api")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == probe["port"]


def test_the_node_tier_is_sandlot_node() -> None:
    pod = _pod("DaemonSet", "sandlot-node")
    (node,) = pod["containers"]
    assert node["command"] == ["sandlot", "node"]
    assert pod["hostNetwork"] is True
    mounts = {m["mountPath"] for m in node["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/var/lib/sandlot", "/run/sandlot"} <= mounts
    assert {"/var/lib/sandlot", "/run/sandlot"} <= set(host_paths.values())


def test_node_settings_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DaemonSet's env, expanded as the kubelet would for two hosts, gives each node agent its
    Kubernetes node name as id, its host IP as address and listen host, the shared images dir and a
    data dir of its own (layers are found by path: two nodes must never share a data dir path)."""
    (node,) = _pod("DaemonSet", "sandlot-node")["containers"]
    by_name = {e["name"]: e for e in node["env"]}
    assert by_name["SANDLOT_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    seen = []
    for host, ip in (("worker-1", "10.0.0.11"), ("worker-2", "10.0.0.12")):
        settings = _settings(monkeypatch, _expand(node["env"], {"spec.nodeName": host, "status.hostIP": ip}, SECRETS))
        port = next(p for p in node["ports"] if p["name"] == "node")
        assert port["containerPort"] == port["hostPort"] == settings.port
        assert settings.node_id == host
        assert settings.effective_node_address == f"{ip}:{settings.port}"
        assert settings.host == ip
        assert settings.node_token == "t" and settings.blob_url == SECRETS["SANDLOT_BLOB_URL"]
        assert settings.effective_database_url.startswith("postgresql+psycopg://")
        images = settings.effective_images_dir
        assert not settings.data_dir.is_relative_to(images) and not images.is_relative_to(settings.data_dir)
        assert settings.data_dir.is_relative_to("/var/lib/sandlot") and images.is_relative_to("/var/lib/sandlot")
        seen.append((settings.data_dir, images))
    assert seen[0][0] != seen[1][0] and seen[0][1] == seen[1][1]


# --- the stance ------------------------------------------------------------------------------------

def test_only_the_node_agent_is_privileged() -> None:
    for name, doc in DOCUMENTS:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in _containers(pod):
            privileged = (container.get("securityContext") or {}).get("privileged", False)
            expected = doc["kind"] == "DaemonSet" and container in pod["containers"]
            assert privileged == expected, f"{name}/{container['name']}"
        if doc["kind"] != "DaemonSet":
            assert not pod.get("hostNetwork") and not any("hostPath" in v for v in pod.get("volumes", [])), name
    api = _pod("Deployment", "sandlot-api")
    assert api["securityContext"]["runAsNonRoot"] is True
    for container in _containers(api):
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_secrets_only_by_reference() -> None:
    """Tokens, passwords, keys and URLs that carry them come from a Secret, never inline; every
    referenced Secret key is in the example Secrets (or made by deploy/make-keys.sh)."""
    examples = {(doc["metadata"]["name"], key) for _, doc in DOCUMENTS if doc["kind"] == "Secret"
                for key in doc["stringData"]}
    made = {("sandlot-keys", name) for name in (*SHARED_KEYS, *CA_FILES)}
    referenced = 0
    for name, doc in DOCUMENTS:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in _containers(pod):
            for env in container.get("env", []):
                if SENSITIVE.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{name}: {env['name']} inline"
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert (ref["name"], ref["key"]) in examples, f"{name}: {ref} not in secrets.example.yaml"
                    referenced += 1
                else:
                    value = str(env.get("value", ""))
                    assert not re.search(r"://[^/@\s]+@", value), f"{name}: {env['name']}: a URL's credentials inline"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                keys = {item["key"] for item in volume["secret"].get("items", [])} or {n for _, n in made}
                assert {(volume["secret"]["secretName"], k) for k in keys} <= made, f"{name}: {volume}"
    assert referenced >= 10


# --- the shared keys: made by make-keys.sh, installed by the init containers -----------------------

def _init_script(kind: str, name: str) -> str:
    (init,) = _pod(kind, name)["initContainers"]
    assert init["command"][:2] == ["sh", "-euc"]
    script: str = init["command"][2]
    return script


def _made_keys(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    out = tmp_path / "made"
    done = subprocess.run(["sh", str(DEPLOY / "make-keys.sh"), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return out


def _as_secret_volume(made: Path, dest: Path) -> Path:
    """The flat layout `kubectl create secret --from-file=DIR --from-file=DIR/egress-ca` gives."""
    dest.mkdir()
    for path in [*made.iterdir(), *(made / "egress-ca").iterdir()]:
        if path.is_file():
            shutil.copy(path, dest / path.name)
    return dest


def _run_init(script: str, keys: Path, data_dir: Path) -> None:
    argv = ["sh", "-euc", script.replace("/keys/", f"{keys}/")]
    if os.geteuid() == 0 and shutil.which("setpriv"):   # as the init container: root with no capabilities
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *argv]
    done = subprocess.run(argv, env={"PATH": os.environ["PATH"], "SANDLOT_DATA_DIR": str(data_dir)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_init_scripts_are_one() -> None:
    assert _init_script("DaemonSet", "sandlot-node") == _init_script("Deployment", "sandlot-api")


def test_installed_keys_are_the_ones_sandlot_uses(tmp_path: Path) -> None:
    """make-keys.sh's keys, through the Secret's flat layout and the init script, are what Sandlot
    loads in the data dir instead of making its own: the same bytes on every node."""
    made = _made_keys(tmp_path)
    keys = _as_secret_volume(made, tmp_path / "secret")
    data_dir = tmp_path / "var" / "nodes" / "worker-1"
    script = _init_script("DaemonSet", "sandlot-node")
    _run_init(script, keys, data_dir)
    _run_init(script, keys, data_dir)   # a restarted pod installs them again over the old copies
    for name in SHARED_KEYS:
        assert data_dir_key(data_dir, name) == bytes.fromhex((made / name).read_text())
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    for path in (data_dir.parent, data_dir / "egress-ca"):   # sandbox mounts search them (userns root)
        assert stat.S_IMODE(path.stat().st_mode) & 0o005 == 0o005, path
    for name, mode in (("ca.crt", 0o644), ("ca.key", 0o600), ("identity.key", 0o600)):
        assert stat.S_IMODE((data_dir / "egress-ca" / name).stat().st_mode) == mode
    ca = EgressCA(data_dir, None)
    assert ca.cert_pem == (made / "egress-ca" / "ca.crt").read_bytes()
    issuer = IdentityIssuer(data_dir, "https://api.example.test", "example.test")
    assert IdentityIssuer(made, "https://api.example.test", "example.test").public_jwk() == issuer.public_jwk()
    # a leaf the egress proxy makes with this CA verifies against it (strict X.509 checks included)
    client = ssl.create_default_context(cafile=str(made / "egress-ca" / "ca.crt"))
    server = ca.context_for("registry.example.test")
    _handshake(client, server, "registry.example.test")


def test_the_api_gets_only_the_webhooks_key(tmp_path: Path) -> None:
    made = _made_keys(tmp_path)
    volume = next(v for v in _pod("Deployment", "sandlot-api")["volumes"] if "secret" in v)["secret"]
    keys = tmp_path / "secret"
    keys.mkdir()
    for item in volume["items"]:
        shutil.copy(made / item["key"], keys / item["path"])
    data_dir = tmp_path / "api"
    _run_init(_init_script("Deployment", "sandlot-api"), keys, data_dir)
    assert sorted(p.name for p in data_dir.iterdir() if p.is_file()) == ["webhooks.key"]
    assert data_dir_key(data_dir, "webhooks.key") == bytes.fromhex((made / "webhooks.key").read_text())


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, name: str) -> None:
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(b, server_side=True) as tls:
                tls.recv(1)
        except BaseException as exc:   # reported by the client side's assertion
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(a, server_hostname=name) as tls:
            peer = tls.getpeercert()
            assert peer is not None and peer["subjectAltName"] == (("DNS", name),)
            tls.sendall(b"x")
    finally:
        thread.join(timeout=30)
    assert not errors, errors


# --- the node's readiness probe sends the token from its environment --------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    token = "node-token-for-the-test"

    def do_GET(self) -> None:
        ok = self.path == "/health" and self.headers.get("X-Sandlot-Node-Token") == self.token
        self.send_response(200 if ok else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_node_readiness_probe_sends_the_token(health_server: str) -> None:
    (node,) = _pod("DaemonSet", "sandlot-node")["containers"]
    argv = node["readinessProbe"]["exec"]["command"]
    assert argv[0] == "python3" and not any("TOKEN=" in a or _Health.token in a for a in argv)
    argv = [sys.executable, *argv[1:]]   # the repo's interpreter stands in for the image's python3

    def probe(token: str) -> int:
        env = {"PATH": os.environ["PATH"], "SANDLOT_NODE_ADDRESS": health_server, "SANDLOT_NODE_TOKEN": token,
               "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}   # proxies ignored
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert probe(_Health.token) == 0
    assert probe("wrong") != 0


# --- systemd -------------------------------------------------------------------------------------

def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_units_run_the_roles() -> None:
    serve, api, node = (_unit(name) for name in UNITS)
    assert serve["ExecStart"] == ["/opt/sandlot/.venv/bin/sandlot serve"]
    assert api["ExecStart"] == ["/opt/sandlot/.venv/bin/sandlot api"]
    assert node["ExecStart"] == ["/opt/sandlot/.venv/bin/sandlot node"]
    assert node["KillMode"] == serve["KillMode"] == ["process"]   # sandboxes survive an agent restart
    assert node["EnvironmentFile"] == ["/etc/sandlot/node.env"] and api["EnvironmentFile"] == ["/etc/sandlot/api.env"]
    assert api["DynamicUser"] == ["yes"] and api["CapabilityBoundingSet"] == [""]
    for unit in (api, node):   # secrets only in the EnvironmentFile (root's 0600 file), never in the unit
        for setting in unit.get("Environment", []):
            assert not SENSITIVE.search(setting.partition("=")[0]), setting


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_verifies(tmp_path: Path, name: str) -> None:
    repo = DEPLOY.parent
    unit = (DEPLOY / "systemd" / name).read_text()
    local = unit.replace("/opt/sandlot/.venv/bin/sandlot", str(repo / ".venv" / "bin" / "sandlot"))
    local = local.replace("WorkingDirectory=/opt/sandlot", f"WorkingDirectory={repo}")
    (tmp_path / name).write_text(local)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert name not in done.stderr, done.stderr   # warnings name the unit


# --- the API Deployment's pod, run as the kubelet would (non-root, no capabilities) -----------------

@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp dir other users can search (pytest's own sit in a 0700 dir of root's)."""
    root = Path(tempfile.mkdtemp(prefix="sandlot-deploy-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _traversable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [*path.resolve().parents, path.resolve()][:-1])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
@pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))
def test_the_api_pod_runs_as_deployed(open_tmp: Path) -> None:
    """The init container and ``sandlot api`` with the Deployment's env, user (10001, its fsGroup),
    no capabilities and no privilege escalation, on an emptyDir-like data dir and a secret volume
    holding only ``webhooks.key``: the router starts, answers 503 while no node is ready and 200
    once a node heartbeats, and makes no key of its own."""
    tmp_path = open_tmp
    sandlot_bin = Path(sys.executable).parent / "sandlot"
    if not _traversable_by_others(sandlot_bin):
        pytest.skip(f"{sandlot_bin} is not reachable by an unprivileged user")
    pod = _pod("Deployment", "sandlot-api")
    context = pod["securityContext"]
    uid, gid, fs_group = context["runAsUser"], context["runAsGroup"], context["fsGroup"]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={fs_group}", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs"]
    empty_dir = tmp_path / "emptydir"   # what the kubelet makes for an emptyDir with an fsGroup
    empty_dir.mkdir(mode=0o777)
    os.chown(empty_dir, 0, fs_group)
    empty_dir.chmod(0o2777)
    made = _made_keys(tmp_path)
    keys = tmp_path / "secret"
    keys.mkdir(mode=0o755)
    volume = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    for item in volume["items"]:   # a secret volume: root-owned, group fsGroup, defaultMode
        shutil.copy(made / item["key"], keys / item["path"])
        os.chown(keys / item["path"], 0, fs_group)
        (keys / item["path"]).chmod(volume["defaultMode"])
    (init,) = pod["initContainers"]
    (api,) = pod["containers"]
    mount = next(m["mountPath"] for m in api["volumeMounts"] if m["name"] == "data")

    def local(env: dict[str, str]) -> dict[str, str]:
        return {**{k: v.replace(mount, str(empty_dir)) for k, v in env.items()}, "PATH": os.environ["PATH"]}

    script = init["command"][2].replace("/keys/", f"{keys}/")
    done = subprocess.run([*drop, "sh", "-euc", script], env=local(_expand(init["env"], {}, {})),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    port = _free_port()
    with postgres.running_postgres() as pg:
        env = local(_expand(api["env"], {}, {**SECRETS, "SANDLOT_DATABASE_URL": pg.url()}))
        env.update(SANDLOT_HOST="127.0.0.1", SANDLOT_PORT=str(port), HOME="/nonexistent")
        log = (tmp_path / "api.log").open("w")
        process = subprocess.Popen([*drop, str(sandlot_bin), *api["command"][1:]], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/health"
            first = _poll(url, process, lambda r: True, tmp_path / "api.log")
            assert first.status_code == 503 and first.json()["message"] == "no ready node"
            db = Database(pg.url())
            try:
                with db.session() as session:
                    node_store.register(session, "worker-1", "127.0.0.1:9", node_store.Capacity(2, 2048, 10),
                                        "test", datetime.now(timezone.utc))
            finally:
                db.dispose()
            ready = _poll(url, process, lambda r: r.status_code == 200, tmp_path / "api.log")
            assert ready.json()["readyNodes"] == ["worker-1"]
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
    data_dir = Path(env["SANDLOT_DATA_DIR"])
    assert sorted(p.name for p in data_dir.rglob("*.key")) == ["webhooks.key"]
    assert data_dir.stat().st_uid == uid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(url: str, process: subprocess.Popen[bytes], done: Any, log: Path) -> httpx.Response:
    """The first answer ``done`` accepts; fails with the log if the process exits or 60 s pass."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            response = httpx.get(url, timeout=5)
            if done(response):
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)

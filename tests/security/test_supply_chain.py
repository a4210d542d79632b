"""Supply chain: COPY uploads and pulled images are what they claim, for every team.

Attacks: (a) a team uploads bytes that do not match the ``filesHash`` they are uploaded
under — to poison another team's COPY through the shared layer cache; (b) a registry
answers hostile indexes/manifests/blobs (path-shaped digests, other algorithms, blobs that
do not match); (c) a tenant names a loopback registry; (d) skopeo is tricked into sending
the host's own registry credentials. Canaries: a marker string that must never reach the
victim's sandbox, files that must not appear outside the image cache, a host credential the
registry must never receive. Each test also runs the legitimate feature next to the attack.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox
from e2b.template.utils import calculate_files_hash, tar_file_stream

from sandlot import ids
from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import SANDLOT, Server, unique_instance, unique_subnet

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("umoci", "skopeo")), reason="needs umoci and skopeo")]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the E2B build API, raw -----------------------------------------------------------------------

class Builds:
    def __init__(self, server: Server, api_key: str) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers={"X-API-Key": api_key}, timeout=60)

    def new(self, prefix: str) -> tuple[str, str]:
        body = self.client.post("/v3/templates", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"}).json()
        return body["templateID"], body["buildID"]

    def upload(self, template_id: str, files_hash: str, data: bytes) -> httpx.Response:
        link = self.client.get(f"/templates/{template_id}/files/{files_hash}")
        assert link.status_code == 201, link.text
        if link.json()["present"]:
            return link
        return httpx.put(link.json()["url"], content=data, timeout=60)

    def present(self, template_id: str, files_hash: str) -> bool:
        return self.client.get(f"/templates/{template_id}/files/{files_hash}").json()["present"]

    def start(self, template_id: str, build_id: str, **body: Any) -> httpx.Response:
        return self.client.post(f"/v2/templates/{template_id}/builds/{build_id}", json=body)

    def wait(self, template_id: str, build_id: str, timeout_s: float = 400) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.client.get(f"/templates/{template_id}/builds/{build_id}/status", params={"limit": 0}).json()
            if status["status"] in ("ready", "error") or time.monotonic() > deadline:
                return status
            time.sleep(0.5)

    def build(self, prefix: str, **body: Any) -> tuple[str, dict[str, Any]]:
        template_id, build_id = self.new(prefix)
        started = self.start(template_id, build_id, **body)
        assert started.status_code == 202, started.text
        return template_id, self.wait(template_id, build_id)


def other_team_key(server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", f"supply-{uuid.uuid4().hex[:6]}", "--name", "t"],
                         env=server.env(), check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def sdk_upload(ctx: Path, src: str, dest: str) -> tuple[str, bytes]:
    """What the Python SDK sends for ``copy(src, dest)``: its filesHash and its tar.gz."""
    files_hash = calculate_files_hash(src, dest, str(ctx), [], False, None)
    with tar_file_stream(src, str(ctx), [], False, True) as stream:
        return files_hash, stream.read()


def tar_of(entries: dict[str, bytes | None]) -> bytes:
    """A tar.gz: ``None`` is a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- (a) uploads ----------------------------------------------------------------------------------

def test_upload_not_matching_files_hash_never_reaches_another_team(server: Server, tmp_path: Path) -> None:
    canary = f"POISON-{uuid.uuid4().hex}"
    victim_ctx = tmp_path / "victim"
    (victim_ctx / "app").mkdir(parents=True)
    (victim_ctx / "app" / "data.txt").write_text("honest app data\n")
    (victim_ctx / "conf.txt").write_text("honest conf\n")
    hash_app, honest_app = sdk_upload(victim_ctx, "app", "/srv/app")
    hash_conf, honest_conf = sdk_upload(victim_ctx, "conf.txt", "/srv/conf.txt")
    steps = [{"type": "COPY", "args": ["app", "/srv/app", "", ""], "filesHash": hash_app},
             {"type": "COPY", "args": ["conf.txt", "/srv/conf.txt", "", ""], "filesHash": hash_conf}]
    attacker = Builds(server, server.api_key)

    # 1. a verifiable forgery (a single file: both SDKs' recipes apply): the build fails naming
    #    the step, and the upload is deleted
    template_id, build_id = attacker.new("poison-file")
    assert attacker.upload(template_id, hash_conf, tar_of({"conf.txt": canary.encode()})).status_code == 201
    assert attacker.start(template_id, build_id, steps=[steps[1]]).status_code == 202
    failed = attacker.wait(template_id, build_id)
    assert failed["status"] == "error", failed
    assert failed["reason"]["step"] == "1" and "do not match its filesHash" in failed["reason"]["message"]
    assert not attacker.present(template_id, hash_conf)

    # 2. a forgery with directories (the JS SDK's recipe can't be recomputed from a tar): the
    #    attacker's own build gets its own bytes, and caches a layer...
    poisoned = tar_of({"app": None, "app/data.txt": canary.encode()})
    template_id, build_id = attacker.new("poison-dir")
    assert attacker.upload(template_id, hash_app, poisoned).status_code == 201
    assert attacker.start(template_id, build_id, steps=[steps[0]]).status_code == 202
    assert attacker.wait(template_id, build_id)["status"] == "ready"

    # ...which the victim team, uploading honestly under the same filesHash, never gets
    victim_key = other_team_key(server)
    victim = Builds(server, victim_key)
    template_id, build_id = victim.new("victim")
    assert victim.upload(template_id, hash_app, honest_app).status_code == 201
    assert victim.upload(template_id, hash_conf, honest_conf).status_code == 201
    assert victim.start(template_id, build_id, steps=steps).status_code == 202
    assert victim.wait(template_id, build_id)["status"] == "ready"
    sbx = Sandbox.create(template_id, api_key=victim_key, timeout=60)
    try:
        result = sbx.commands.run("cat /srv/app/data.txt /srv/conf.txt; grep -rl POISON /srv || true")
        assert result.stdout == "honest app data\nhonest conf\n"
    finally:
        sbx.kill()


def test_upload_to_an_other_template_of_the_team_is_refused(server: Server) -> None:
    """The upload URL's token binds team, template and hash: another hash is 403, nothing stored."""
    builds = Builds(server, server.api_key)
    template_id, _ = builds.new("token")
    link = builds.client.get(f"/templates/{template_id}/files/{'a' * 64}").json()["url"]
    forged = link.replace("a" * 64, "b" * 64)
    assert httpx.put(forged, content=tar_of({"x": b"x"})).status_code == 403
    assert not builds.present(template_id, "b" * 64)


# --- a tiny registry that says whatever the test wants ---------------------------------------------

class FakeRegistry:
    """``/v2/<repo>/manifests/<ref>`` and ``/v2/<repo>/blobs/<digest>`` from a dict; optional
    Basic auth; logs every Authorization header it receives."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.authorizations: list[str] = []
        self.requests: list[str] = []
        self.password = password
        self.expected = ("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()) if user else None
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                registry.requests.append(self.path)
                auth = self.headers.get("Authorization")
                if auth:
                    registry.authorizations.append(auth)
                if registry.expected and auth != registry.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in ("/v2/", "/v2"):
                    found: tuple[str, bytes] | None = ("application/json", b"{}")
                else:
                    found = registry.routes.get(self.path)
                if found is None:
                    data = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}).encode()
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                elif found[0] == "redirect":
                    data = b""
                    self.send_response(307)
                    self.send_header("Location", found[1].decode())
                else:
                    media, data = found
                    self.send_response(200)
                    self.send_header("Content-Type", media)
                    self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # http.server's hook names
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def manifest(self, repo: str, ref: str, doc: dict | bytes, media: str = OCI_MANIFEST) -> str:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.routes[f"/v2/{repo}/manifests/{ref}"] = (media, data)
        self.routes[f"/v2/{repo}/manifests/{_sha(data)}"] = (media, data)
        return _sha(data)

    def blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or _sha(data)
        self.routes[f"/v2/{repo}/blobs/{digest}"] = ("application/octet-stream", data)
        return digest

    def image(self, repo: str, tag: str, files: dict[str, bytes], layer_digest: str | None = None,
              layer_data: bytes | None = None, config_digest: str | None = None) -> tuple[str, dict]:
        """A one-layer image; the optional arguments forge parts of it."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["FAKE=1"], "WorkingDir": "/"},
                             "rootfs": {"type": "layers", "diff_ids": [_sha(raw.getvalue())]}}).encode()
        cfg = self.blob(repo, config, config_digest)
        lay = self.blob(repo, layer_data if layer_data is not None else layer, layer_digest or _sha(layer))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": lay,
                                "size": len(layer)}]}
        return self.manifest(repo, tag, manifest), manifest

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def registries() -> Iterator[tuple[FakeRegistry, FakeRegistry]]:
    open_reg, auth_reg = FakeRegistry(), FakeRegistry("puller", f"right-{uuid.uuid4().hex[:8]}")
    yield open_reg, auth_reg
    open_reg.close()
    auth_reg.close()


HOST_CANARY = ("hostuser", f"HOST-CANARY-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def pull_server(tmp_path_factory: pytest.TempPathFactory, registries: tuple[FakeRegistry, FakeRegistry]) -> Iterator[Server]:
    """A server whose operator allow-lists 127.0.0.1 registries and whose host has registry
    credentials for them lying where skopeo would look by default (the canary)."""
    work = tmp_path_factory.mktemp("supply")
    token = base64.b64encode(":".join(HOST_CANARY).encode()).decode()
    auths = {"auths": {reg.host: {"auth": token} for reg in registries}}
    for path in (work / "xdg" / "containers" / "auth.json", work / "docker" / "config.json", work / "regauth.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(auths))
    srv = Server(workdir=work, api_key=ids.new_api_key(), instance=unique_instance("c"), subnet=unique_subnet(15), extra_env={
        "SANDLOT_WARM_POOL_SIZE": "0",  # builds FROM images only: no sandboxes
        "SANDLOT_REGISTRY_ALLOW_PRIVATE": '["127.0.0.1"]',
        "SANDLOT_UPLOAD_MAX_BYTES": str(64 * 1024),
        "REGISTRY_AUTH_FILE": str(work / "regauth.json"),
        "XDG_RUNTIME_DIR": str(work / "xdg"),
        "DOCKER_CONFIG": str(work / "docker"),
    })
    srv.start()
    yield srv
    srv.stop()


def images_dir(server: Server) -> Path:
    return Path(server.env().get("SANDLOT_DATA_DIR") or default_data_dir()) / "templates" / "images"


# --- (b) hostile registry answers -------------------------------------------------------------------

def test_hostile_digests_and_blobs_are_refused_and_nothing_is_cached(pull_server: Server, registries, tmp_path: Path) -> None:
    reg, _ = registries
    builds = Builds(pull_server, pull_server.api_key)
    canary = tmp_path / f"canary-{uuid.uuid4().hex[:8]}"
    traversal = "sha256:" + "../" * 12 + str(canary).lstrip("/")

    cases: dict[str, tuple[str, str]] = {}
    # an index whose entry's digest is a path
    reg.manifest("trav", "1", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": traversal, "size": 10, "platform": {"architecture": "amd64", "os": "linux"}}]},
        OCI_INDEX)
    cases["trav:1"] = ("only 'sha256:' + 64 lowercase hex", "")
    # other algorithms for the config and a layer
    _, good = reg.image("algo", "base", {"hello.txt": b"hi\n"})
    for tag, digest in (("md5", "md5:" + "0" * 32), ("sha512", "sha512:" + "0" * 128), ("upper", "sha256:" + "A" * 64)):
        doc = json.loads(json.dumps(good))
        doc["config"]["digest"] = digest
        cases[f"algo:{tag}"] = ("only 'sha256:' + 64 lowercase hex", reg.manifest("algo", tag, doc))
    doc = json.loads(json.dumps(good))
    doc["layers"][0]["digest"] = traversal
    cases["algo:layer-path"] = ("only 'sha256:' + 64 lowercase hex", reg.manifest("algo", "layer-path", doc))
    # a layer whose bytes are not the ones its digest names
    honest_layer = good["layers"][0]["digest"]
    lie, _ = reg.image("lie", "1", {"hello.txt": b"hi\n"}, layer_digest=honest_layer,
                       layer_data=gzip.compress(b"not the layer" * 100))
    reg.routes[f"/v2/lie/blobs/{honest_layer}"] = ("application/octet-stream", gzip.compress(b"not the layer" * 100))
    cases["lie:1"] = ("", lie)
    # an index naming a manifest digest the registry answers with other bytes
    real_digest, _ = reg.image("swap", "real", {"hello.txt": b"hi\n"})
    other_digest, _ = reg.image("swap", "other", {"hello.txt": b"other\n"})
    reg.routes[f"/v2/swap/manifests/{real_digest}"] = reg.routes[f"/v2/swap/manifests/{other_digest}"]
    reg.manifest("swap", "1", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": real_digest, "size": 10, "platform": {"architecture": "amd64", "os": "linux"}}]},
        OCI_INDEX)
    cases["swap:1"] = ("whose content hashes to", real_digest)

    for ref, (message, digest) in cases.items():
        _, status = builds.build("hostile", fromImage=f"{reg.host}/{ref}")
        assert status["status"] == "error", (ref, status)
        assert status["reason"]["step"] == "base" and "Pulling image" in status["reason"]["message"], (ref, status)
        assert message in status["reason"]["message"], (ref, status["reason"]["message"])
        if digest:
            assert not (images_dir(pull_server) / digest.replace(":", "-")).exists(), ref
    assert not canary.exists() and not list(tmp_path.iterdir())
    assert not list(images_dir(pull_server).glob("sha256-.*"))

    # references with other transports or path-shaped digests never reach skopeo: 400
    template_id, build_id = builds.new("transport")
    for ref in (f"oci:{tmp_path}:x", "dir:/etc", f"docker-archive:{tmp_path}/x.tar", "containers-storage:busybox",
                f"{reg.host}/trav@{traversal}", f"http://{reg.host}/x"):
        refused = builds.start(template_id, build_id, fromImage=ref)
        assert refused.status_code == 400, (ref, refused.text)
        assert refused.json()["code"] == 400 and "fromImage" in refused.json()["message"]

    # the legit pull still works (and is what the cache holds)
    digest, _ = reg.image("good", "1", {"hello.txt": b"hello from the registry\n"})
    _, status = builds.build("good", fromImage=f"{reg.host}/good:1")
    assert status["status"] == "ready", status
    assert (images_dir(pull_server) / digest.replace(":", "-") / "rootfs" / "hello.txt").read_text() == "hello from the registry\n"


def test_skopeo_itself_refuses_a_blob_that_does_not_match_its_digest(registries, tmp_path: Path) -> None:
    """skopeo's copy already verifies blob digests (our own re-check is the second line)."""
    reg, _ = registries
    _, good = reg.image("selfcheck", "real", {"hello.txt": b"hi\n"})
    layer = good["layers"][0]["digest"]
    reg.routes[f"/v2/selfcheck/blobs/{layer}"] = ("application/octet-stream", gzip.compress(b"forged"))
    done = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--src-no-creds",
                           f"docker://{reg.host}/selfcheck:real", f"oci:{tmp_path / 'oci'}:x"],
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode != 0 and "digest" in done.stderr.lower(), done.stderr


# --- redirects to private addresses -------------------------------------------------------------

CANARY_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _hit(self):
        with open(sys.argv[2], "a") as log:
            log.write(self.path + "\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_GET = do_HEAD = _hit
http.server.HTTPServer((sys.argv[1], 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def lan_canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTP service on a private address (a network namespace the test creates, like a
    metadata service or a LAN host would be) that logs every request it gets."""
    work = tmp_path_factory.mktemp("lan")
    tag = f"{os.getpid() % 100000:05d}"
    ns, host_if, ns_if = f"scl{tag}", f"sclh{tag}", f"scln{tag}"
    prefix = ".".join(unique_subnet(15).split(".")[:2])  # this test process's 10.X block
    host_ip, ns_ip = f"{prefix}.255.253", f"{prefix}.255.254"

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    ip("netns", "add", ns)
    proc = None
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        (work / "server.py").write_text(CANARY_SERVER)
        log = work / "requests.log"
        log.touch()
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(work / "server.py"), ns_ip, str(log)])
        deadline = time.monotonic() + 20
        while True:  # reachable from the host directly: only the pull proxy stands in between
            try:
                if httpx.get(f"http://{ns_ip}:8080/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield ns_ip, log
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_redirects_to_private_addresses_are_refused(pull_server: Server, registries, lan_canary) -> None:
    """The registry (allow-listed) redirects a blob to a private address: skopeo's connection
    goes through the pull proxy, which refuses it; the LAN service never sees a request."""
    reg, _ = registries
    ns_ip, log = lan_canary
    builds = Builds(pull_server, pull_server.api_key)
    for scheme in ("http", "https"):
        _, manifest = reg.image(f"redir-{scheme}", "1", {"hello.txt": scheme.encode()})
        layer = manifest["layers"][0]["digest"]
        reg.routes[f"/v2/redir-{scheme}/blobs/{layer}"] = ("redirect", f"{scheme}://{ns_ip}:8080/{layer}".encode())
        _, status = builds.build("redirect", fromImage=f"{reg.host}/redir-{scheme}:1")
        assert status["status"] == "error", status
        assert "refused" in status["reason"]["message"] and ns_ip in status["reason"]["message"], status["reason"]
    assert [line for line in log.read_text().splitlines() if line != "/ready"] == []


def test_redirects_to_host_loopback_reach_nothing(pull_server: Server, registries) -> None:
    """Go never proxies loopback literals or ``localhost``: skopeo runs in a network namespace
    of its own, so such a redirect finds no host service (a loopback canary logs requests)."""
    reg, _ = registries
    canary = FakeRegistry()  # any loopback HTTP service of the host; it logs every request
    try:
        builds = Builds(pull_server, pull_server.api_key)
        port = canary.host.split(":")[1]
        for i, target in enumerate((f"http://127.0.0.1:{port}/secret", f"http://localhost:{port}/secret",
                                    f"https://127.0.0.1:{port}/secret")):
            _, manifest = reg.image(f"loop{i}", "1", {"hello.txt": target.encode()})
            reg.routes[f"/v2/loop{i}/blobs/{manifest['layers'][0]['digest']}"] = ("redirect", target.encode())
            _, status = builds.build("loopback-redirect", fromImage=f"{reg.host}/loop{i}:1")
            assert status["status"] == "error", (target, status)
        assert canary.requests == []
        # the registry itself (allow-listed, on loopback) is still reachable from that namespace
        reg.image("loopok", "1", {"hello.txt": b"ok\n"})
        assert builds.build("loopback-ok", fromImage=f"{reg.host}/loopok:1")[1]["status"] == "ready"
    finally:
        canary.close()


# --- (c) loopback registries need the operator ------------------------------------------------------

def test_loopback_registry_needs_the_operator_allow_list(server: Server, pull_server: Server, registries) -> None:
    reg, _ = registries
    reg.image("allowed", "1", {"hello.txt": b"allowed\n"})
    without = Builds(server, server.api_key)  # the session server: no SANDLOT_REGISTRY_ALLOW_PRIVATE
    template_id, build_id = without.new("loopback")
    before = len(reg.requests)
    for ref in (f"{reg.host}/allowed:1", f"localhost:{reg.host.split(':')[1]}/allowed:1", "127.0.0.2:5000/x:1",
                "[::1]:5000/x:1", "169.254.169.254/latest:1", "10.0.0.1/x:1"):
        refused = without.start(template_id, build_id, fromImage=ref)
        assert refused.status_code == 400, (ref, refused.text)
        assert "SANDLOT_REGISTRY_ALLOW_PRIVATE" in refused.json()["message"]
    assert len(reg.requests) == before  # refused before anything was sent to the registry
    _, status = Builds(pull_server, pull_server.api_key).build("allowed", fromImage=f"{reg.host}/allowed:1")
    assert status["status"] == "ready", status


# --- (d) host credentials never leave -------------------------------------------------------------

def _basic(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return base64.b64decode(value).decode(errors="replace") if scheme == "Basic" else header


def test_skopeo_never_sends_host_credentials(pull_server: Server, registries) -> None:
    _, reg = registries
    reg.image("private", "1", {"hello.txt": b"private\n"})
    builds = Builds(pull_server, pull_server.api_key)
    _, anonymous = builds.build("anon", fromImage=f"{reg.host}/private:1")
    assert not any(HOST_CANARY[1] in _basic(a) for a in reg.authorizations), reg.authorizations
    assert anonymous["status"] == "error" and "Pulling image" in anonymous["reason"]["message"]
    _, wrong = builds.build("wrong", fromImage=f"{reg.host}/private:1",
                            fromImageRegistry={"type": "registry", "username": "puller", "password": "wrong"})
    assert wrong["status"] == "error"
    _, right = builds.build("right", fromImage=f"{reg.host}/private:1",
                            fromImageRegistry={"type": "registry", "username": "puller", "password": reg.password})
    assert right["status"] == "ready", right
    assert reg.authorizations, "the registry saw no credentials at all"
    sent = [_basic(a) for a in reg.authorizations]
    assert not any(HOST_CANARY[1] in s for s in sent), sent
    assert set(sent) <= {":", "puller:wrong", f"puller:{reg.password}"}  # ":" is skopeo's --no-creds


def test_upload_cap_is_413_and_stores_nothing(pull_server: Server) -> None:
    builds = Builds(pull_server, pull_server.api_key)
    template_id, _ = builds.new("cap")
    big = os.urandom(128 * 1024)
    too_big = builds.upload(template_id, "c" * 64, big)
    assert too_big.status_code == 413 and "SANDLOT_UPLOAD_MAX_BYTES" in too_big.json()["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(4):
            yield big[: 32 * 1024]

    link = builds.client.get(f"/templates/{template_id}/files/{'d' * 64}").json()["url"]
    assert httpx.put(link, content=chunked()).status_code == 413
    assert not builds.present(template_id, "c" * 64) and not builds.present(template_id, "d" * 64)
    small = builds.upload(template_id, "e" * 64, tar_of({"x.txt": b"x"}))
    assert small.status_code == 201


# --- the JS SDK's uploads still build ---------------------------------------------------------------

JS_DIR = Path(__file__).resolve().parents[1] / "js"
JS_BUILD = r"""
const { Template, Sandbox } = require("e2b");
(async () => {
  const [ctx, name] = process.argv.slice(2);
  const template = Template({ fileContextPath: ctx }).fromTemplate("base")
    .copy("conf.txt", "/srv/conf.txt")   // one file: its filesHash is checked
    .copy("app", "/srv/app");            // directories: the JS recipe hashes their st_size
  await Template.build(template, name);
  const sbx = await Sandbox.create(name, { timeoutMs: 60000 });
  try {
    const out = await sbx.commands.run("cat /srv/conf.txt /srv/app/data.txt /srv/app/sub/deep.txt");
    process.stdout.write(out.stdout);
  } finally {
    await sbx.kill();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None or not (JS_DIR / "node_modules" / "e2b").is_dir(),
                    reason="needs node and tests/js/node_modules (make js-deps)")
def test_js_sdk_copy_still_builds(server: Server, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "conf.txt").write_text("js conf\n")
    (ctx / "app" / "data.txt").write_text("js app\n")
    (ctx / "app" / "sub" / "deep.txt").write_text("js deep\n")
    script = tmp_path / "build.cjs"
    script.write_text(JS_BUILD)
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key,
               NODE_PATH=str(JS_DIR / "node_modules"))
    done = subprocess.run(["node", str(script), str(ctx), f"js-copy-{uuid.uuid4().hex[:8]}"], env=env, cwd=JS_DIR,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout == "js conf\njs app\njs deep\n"

"""``fromImage`` against a local registry (Debian's docker-registry on loopback) holding a
busybox-only image the test builds with umoci and pushes with skopeo — no Docker engine,
no Python in the image; plus ``fromTemplate`` on top of a built template."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt for the registry htpasswd file (Debian has no python3-bcrypt in the venv)
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template
from e2b.exceptions import BuildException

from sandlot import ids
from tests.e2e.server import Server, free_port, sdk_pointed_at, unique_instance, unique_subnet

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("docker-registry", "umoci", "skopeo", "busybox")),
                                 reason="needs docker-registry, umoci, skopeo and busybox-static (make deps)")]

BASH_SHIM = "#!/bin/sh\n[ \"$1\" = -l ] && shift\nexec /bin/sh \"$@\"\n"


@dataclass
class Registry:
    host: str
    user: str | None = None
    password: str | None = None


def _start_registry(root: Path, auth: tuple[str, str] | None) -> tuple[subprocess.Popen, Registry]:
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:", f"    rootdirectory: {root / 'data'}",
             "http:", f"  addr: 127.0.0.1:{port}"]
    if auth:
        hashed = crypt.crypt(auth[1], crypt.mksalt(crypt.METHOD_BLOWFISH)).replace("$2b$", "$2a$", 1)
        (root / "htpasswd").write_text(f"{auth[0]}:{hashed}\n")
        lines += ["auth:", "  htpasswd:", "    realm: sandlot-test", f"    path: {root / 'htpasswd'}"]
    (root / "config.yml").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=open(root / "log", "wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError((root / "log").read_text())
    return proc, Registry(f"127.0.0.1:{port}", *(auth or (None, None)))


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def build_busybox_image(work: Path) -> Path:
    """Two layers; the second deletes a file and replaces a directory (whiteouts)."""
    layout, bundle = work / "layout", work / "bundle"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:tiny")
    _run("umoci", "unpack", "--image", f"{layout}:tiny", str(bundle))
    rootfs = bundle / "rootfs"
    for d in ("bin", "etc", "tmp", "root", "opt/dir"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\n")
    (rootfs / "etc" / "removed.txt").write_text("should be gone\n")
    (rootfs / "opt" / "dir" / "old.txt").write_text("old\n")
    _run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:tiny", str(bundle))
    (rootfs / "etc" / "removed.txt").unlink()
    shutil.rmtree(rootfs / "opt" / "dir")
    (rootfs / "opt" / "dir").mkdir()
    (rootfs / "opt" / "dir" / "new.txt").write_text("new\n")
    _run("umoci", "repack", "--image", f"{layout}:tiny", str(bundle))
    _run("umoci", "config", "--image", f"{layout}:tiny", "--config.env", "TINY=yes", "--config.workingdir", "/opt")
    return layout


def push(layout: Path, registry: Registry, repo: str) -> str:
    ref = f"{registry.host}/{repo}"
    argv = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false"]
    if registry.user:
        argv += ["--dest-creds", f"{registry.user}:{registry.password}"]
    _run(*argv, f"oci:{layout}:tiny", f"docker://{ref}")
    return ref


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server: its operator allow-lists the loopback registries the tests run
    (tenants may not name loopback/private registries otherwise, docs/security/supply-chain.md)."""
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-img"), api_key=ids.new_api_key(),
                 instance=unique_instance("m"), subnet=unique_subnet(15),
                 extra_env={"SANDLOT_REGISTRY_ALLOW_PRIVATE": '["127.0.0.1"]'})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    proc, registry = _start_registry(tmp_path_factory.mktemp("registry"), None)
    yield registry
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    proc, registry = _start_registry(tmp_path_factory.mktemp("registry-auth"), ("puller", "s3cret-" + uuid.uuid4().hex[:6]))
    yield registry
    proc.terminate()
    proc.wait(10)


def _busybox_template(ref: str, marker: str, **creds: str) -> Template:
    return (
        Template().from_image(ref, **creds)
        .run_cmd(f"echo {marker} > /tmp/marker; ls /opt/dir > /tmp/listing")  # runs with /bin/sh: no bash here
        .run_cmd(f"printf '{BASH_SHIM}' > /bin/bash && chmod 755 /bin/bash")  # the SDK runs commands with bash -l -c
    )


@pytest.mark.slow
def test_from_image_anonymous_busybox_without_python(server: Server, image_layout: Path, open_registry: Registry) -> None:
    ref = push(image_layout, open_registry, f"tiny-{uuid.uuid4().hex[:6]}:1")
    name = f"img-{uuid.uuid4().hex[:8]}"
    Template.build(_busybox_template(ref, name), name)
    with Sandbox.create(name, timeout=60) as sbx:
        assert sbx.files.read("/tmp/marker").strip() == name
        assert sbx.files.read("/tmp/listing").split() == ["new.txt"]  # opaque/whiteout of layer 2 applied
        assert not sbx.files.exists("/etc/removed.txt")
        result = sbx.commands.run("echo $TINY; pwd; whoami; ls /usr/bin/python3 2>&1 || echo no-python")
        assert result.stdout.split() == ["yes", "/opt", "root", "ls:", "/usr/bin/python3:", "No", "such", "file",
                                         "or", "directory", "no-python"]

    # fromTemplate: build on top of that template's final layer
    child = f"child-{uuid.uuid4().hex[:8]}"
    Template.build(Template().from_template(name).run_cmd("echo child >> /tmp/marker"), child)
    with Sandbox.create(child, timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/marker").stdout.split() == [name, "child"]
        assert sbx.commands.run("pwd").stdout.strip() == "/opt"  # inherits the parent's WORKDIR/ENV


@pytest.mark.slow
def test_from_image_with_registry_credentials(server: Server, image_layout: Path, private_registry: Registry) -> None:
    ref = push(image_layout, private_registry, f"private-{uuid.uuid4().hex[:6]}:2")
    name = f"priv-img-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BuildException, match="Pulling image"):  # anonymous pull is refused
        Template.build(_busybox_template(ref, name), name)
    with pytest.raises(BuildException, match="Pulling image"):
        Template.build(_busybox_template(ref, name, username="puller", password="wrong"), name)
    Template.build(_busybox_template(ref, name, username=private_registry.user, password=private_registry.password), name)
    with Sandbox.create(name, timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/marker").stdout.strip() == name


def test_unreachable_image_is_a_clear_error(server: Server) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(BuildException, match=f"Pulling image '127.0.0.1:{port}/nothing:1' failed"):
        Template.build(Template().from_image(f"127.0.0.1:{port}/nothing:1").run_cmd("true"), f"none-{uuid.uuid4().hex[:6]}")

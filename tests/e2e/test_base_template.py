"""Issue 15: the ``base`` template carries what E2B's ``e2bdev/base`` gives agents —
``python`` and ``python3`` with pip, Node.js 20+ with npm/npx, git, curl, a C toolchain,
jq, unzip — for the default user and for root, with nothing installed first.
The unmodified ``e2b`` SDK against a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.e2e.server import Server, data_dir, unique_instance, unique_subnet

USERS = ["user", "root"]


def _run(sbx: Sandbox, cmd: str, user: str) -> str:
    result = sbx.commands.run(cmd, user=user, timeout=120)
    assert result.exit_code == 0, (cmd, result.stdout, result.stderr)
    return result.stdout + result.stderr


@pytest.mark.parametrize("user", USERS)
def test_python_pip_and_node_are_on_path(sandbox: Sandbox, user: str) -> None:
    assert re.fullmatch(r"Python 3\.\d+\.\d+", _run(sandbox, "python --version", user).strip())
    assert _run(sandbox, "python3 --version", user).strip() == _run(sandbox, "python --version", user).strip()
    assert _run(sandbox, "python3 -m pip --version", user).startswith("pip ")
    assert _run(sandbox, "pip --version", user).startswith("pip ")
    node = _run(sandbox, "node --version", user).strip()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", node), node
    assert int(node[1:].split(".")[0]) >= 20
    assert _run(sandbox, "node -e 'console.log(6 * 7)'", user).strip() == "42"
    assert re.fullmatch(r"\d+\.\d+\.\d+", _run(sandbox, "npm --version", user).strip())
    assert re.fullmatch(r"\d+\.\d+\.\d+", _run(sandbox, "npx --version", user).strip())
    assert _run(sandbox, "command -v node npm npx", user).split() == [
        "/usr/local/bin/node", "/usr/local/bin/npm", "/usr/local/bin/npx"]


@pytest.mark.parametrize("user", USERS)
def test_pip_install_works_without_flags(sandbox: Sandbox, user: str) -> None:
    """As in E2B's base (``pip install cowsay`` in its docs): no PEP 668 refusal. A local
    package, so the test sends nothing off the machine."""
    pyproject = ('[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
                 '[project]\nname = "hello-pkg"\nversion = "0.1"\n')
    sandbox.files.write(f"/tmp/pkg-{user}/pyproject.toml", pyproject, user=user)
    sandbox.files.write(f"/tmp/pkg-{user}/hello_pkg/__init__.py", "GREETING = 'hi'\n", user=user)
    _run(sandbox, f"pip install -q --no-index --no-build-isolation /tmp/pkg-{user}", user)
    assert _run(sandbox, "cd / && python -c 'import hello_pkg; print(hello_pkg.GREETING)'", user) == "hi\n"


@pytest.mark.parametrize("user", USERS)
def test_npm_init_and_run_in_a_temp_dir(sandbox: Sandbox, user: str) -> None:
    out = _run(sandbox, "d=$(mktemp -d) && cd $d && npm init -y >/dev/null"
                        " && npm pkg set scripts.hi='node -e \"console.log(process.version)\"'"
                        " && npm run --silent hi && cat package.json", user)
    version, _, package = out.partition("\n")
    assert int(version.strip()[1:].split(".")[0]) >= 20
    assert json.loads(package)["scripts"]["hi"].startswith("node -e")


@pytest.mark.parametrize("user", USERS)
def test_c_toolchain_builds_and_runs_hello_world(sandbox: Sandbox, user: str) -> None:
    sandbox.files.write(f"/tmp/hello-{user}.c",
                        '#include <stdio.h>\nint main(void) { printf("hello from %s\\n", "gcc"); return 0; }\n',
                        user=user)
    assert _run(sandbox, f"cd /tmp && gcc -O2 -o hello-{user} hello-{user}.c && ./hello-{user}", user) == "hello from gcc\n"
    assert _run(sandbox, "make --version", user).startswith("GNU Make")
    assert _run(sandbox, "printf 'int main(){return 0;}' | g++ -x c++ -o /tmp/cxx-$(id -u) - && /tmp/cxx-$(id -u) && echo ok",
                user) == "ok\n"


@pytest.mark.parametrize("user", USERS)
def test_jq_unzip_git_curl(sandbox: Sandbox, user: str) -> None:
    assert _run(sandbox, "echo '{\"a\": [1, 2, 3]}' | jq -c '.a | add'", user) == "6\n"
    assert _run(sandbox, "d=$(mktemp -d) && cd $d && echo zipped > f.txt && zip -q a.zip f.txt && rm f.txt"
                         " && unzip -q a.zip && cat f.txt", user) == "zipped\n"
    assert _run(sandbox, "git --version", user).startswith("git version ")
    assert _run(sandbox, "d=$(mktemp -d) && cd $d && git init -q && echo x > x && git add x"
                         " && git -c user.name=t -c user.email=t@e commit -qm one && git log --format=%s", user) == "one\n"
    assert _run(sandbox, "curl --version", user).startswith("curl ")


@pytest.mark.parametrize("user", USERS)
def test_python_http_server_serves_a_file_curl_fetches(sandbox: Sandbox, user: str) -> None:
    port = 8000 if user == "user" else 8001
    home = "/home/user" if user == "user" else "/root"
    sandbox.files.write(f"{home}/www/index.txt", f"served to {user}\n", user=user)
    server = sandbox.commands.run(f"cd {home}/www && exec python -m http.server {port} --bind 127.0.0.1",
                                  user=user, background=True)
    try:
        # waits for the listener by retrying refused connections (no sleeps, no clocks)
        out = _run(sandbox, f"curl -sf --retry 100 --retry-connrefused --retry-delay 0"
                            f" http://127.0.0.1:{port}/index.txt", user)
        assert out == f"served to {user}\n"
    finally:
        server.kill()


def test_base_marker_records_recipe_and_node_version(server: object) -> None:
    """The build's metadata names its recipe and the Node version the range resolved to."""
    from sandlot.templates.base import MARKER, base_rootfs_path, recipe_id

    marker = (base_rootfs_path(data_dir() / "templates" / "base") / MARKER).read_text()
    assert f"recipe {recipe_id()} " in marker
    node = re.search(r"node v(\d+)\.\d+\.\d+ sha256:[0-9a-f]{64} ", marker)
    assert node is not None and int(node.group(1)) >= 20, marker


@pytest.mark.slow
def test_a_new_base_recipe_serves_new_sandboxes_and_old_ones_keep_theirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `sandlot setup` does after an upgrade changes the recipe: the new base is
    registered next to the old one; a sandbox made before keeps its lower layer, through a
    pause and resume too. (The "new" base is a hard-linked copy: same content, new path.)
    A server of its own: registering a base changes what every later create of that
    server's database gets, and the copy is removed afterwards."""
    from sandlot import bootstrap, ids
    from sandlot.orchestrator.requests import ENVD_VERSION
    from sandlot.settings import Settings
    from sandlot.store.database import Database
    from sandlot.templates import base

    srv = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("b"), subnet=unique_subnet())
    srv.start()
    opts = {"api_key": srv.api_key, "api_url": srv.url, "sandbox_url": srv.url}
    old_layer = str(base.base_rootfs_path(data_dir() / "templates" / "base"))
    new_root = data_dir() / "templates" / "base" / f"test-{srv.instance}"
    try:
        before = Sandbox.create(timeout=120, **opts)
        assert _layers(srv, before.sandbox_id) == [old_layer]
        new_root.mkdir()
        subprocess.run(["cp", "-al", old_layer, str(new_root / "rootfs")], check=True, capture_output=True)
        monkeypatch.setattr(base, "recipe_id", lambda: new_root.name)
        db = Database(srv.database_url)
        try:
            bootstrap.register_base_template(Settings(data_dir=data_dir()), db, ENVD_VERSION)
        finally:
            db.dispose()
        after = Sandbox.create(timeout=120, **opts)
        assert _layers(srv, after.sandbox_id) == [str(new_root / "rootfs")]
        assert after.commands.run("node -e 'console.log(1)'").stdout == "1\n"

        before.beta_pause()
        resumed = Sandbox.connect(before.sandbox_id, **opts)
        assert resumed.commands.run("python -c 'print(2)'").stdout == "2\n"
        assert _layers(srv, before.sandbox_id) == [old_layer]
    finally:
        srv.reset()   # its sandboxes (and warm pool) go before the copy they stand on
        shutil.rmtree(new_root, ignore_errors=True)


def _layers(server: Server, sandbox_id: str) -> list[str]:
    path = data_dir() / "runtime" / server.instance / "sandboxes" / sandbox_id / "runtime.json"
    return list(json.loads(path.read_text())["layers"])


def test_npm_global_installs_land_on_everyones_path(sandbox: Sandbox) -> None:
    """The Node tree's npmrc puts `npm i -g` in /usr/local (bin on PATH), not inside the
    Node tree; a local package, so nothing leaves the machine."""
    for user in USERS:
        assert _run(sandbox, "npm config get prefix", user).strip() == "/usr/local"
    sandbox.files.write("/opt/greet/package.json",
                        json.dumps({"name": "greet", "version": "1.0.0", "bin": {"greet": "cli.js"}}), user="root")
    sandbox.files.write("/opt/greet/cli.js", "#!/usr/bin/env node\nconsole.log('hello ' + process.version)\n",
                        user="root")
    _run(sandbox, "chmod +x /opt/greet/cli.js && npm install -g --no-audit /opt/greet", "root")
    for user in USERS:
        assert _run(sandbox, "greet", user).startswith("hello v")


@pytest.mark.parametrize("user", USERS)
def test_python_venv_works(sandbox: Sandbox, user: str) -> None:
    assert _run(sandbox, "d=$(mktemp -d) && python -m venv $d/v && $d/v/bin/python -c 'import sys; print(sys.prefix)'",
                user).strip().endswith("/v")

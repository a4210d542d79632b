"""Template management with the SDK and the REST API: tags, aliases, visibility, delete, counters,
and another team seeing nothing (404)."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest
from e2b import Sandbox, Template

from tests.e2e.server import SANDLOT, Server

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", "tpl-other", "--name", "t"], env=server.env(),
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _tpl(marker: str) -> Template:
    return Template().from_template("base").run_cmd(f"echo {marker} > /tmp/marker")


def test_tags_aliases_and_counters(server: Server) -> None:
    name = f"tags-{uuid.uuid4().hex[:8]}"
    first = Template.build(_tpl("v1-" + name), f"{name}:v1")
    second = Template.build(_tpl("v2-" + name), name, tags=["v2", "latest"])
    assert first.template_id == second.template_id
    assert Template.exists(name) and not Template.exists(f"nope-{name}")

    tags = {t.tag: str(t.build_id) for t in Template.get_tags(first.template_id)}
    assert tags == {"v1": first.build_id, "v2": second.build_id, "latest": second.build_id}
    with Sandbox.create(f"{name}:v1", timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/marker").stdout.strip() == "v1-" + name
    with Sandbox.create(name, timeout=60) as sbx:  # no tag: the newest ready build
        assert sbx.commands.run("cat /tmp/marker").stdout.strip() == "v2-" + name

    Template.assign_tags(f"{name}:v1", ["stable"])
    with Sandbox.create(f"{name}:stable", timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/marker").stdout.strip() == "v1-" + name
    Template.remove_tags(name, ["stable"])
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(f"{name}:stable")

    headers = {"X-API-Key": server.api_key}
    info = httpx.get(f"{server.url}/templates/{first.template_id}", headers=headers).json()
    assert info["aliases"] == [name] and info["buildCount"] == 2 and info["buildStatus"] == "ready"
    namespace, _, bare = info["names"][0].partition("/")   # names are per team: "team-slug/name"
    assert len(info["names"]) == 1 and namespace.startswith("team-") and bare == name
    assert info["spawnCount"] == 3 and info["lastSpawnedAt"]
    assert {b["buildID"] for b in info["builds"]} == {first.build_id, second.build_id}
    assert httpx.get(f"{server.url}/templates/aliases/{name}", headers=headers).json()["templateID"] == first.template_id
    listed = httpx.get(f"{server.url}/templates", headers=headers).json()
    assert first.template_id in {t["templateID"] for t in listed}


def test_other_team_sees_404_until_public_and_delete(server: Server, other_key: str) -> None:
    name = f"priv-{uuid.uuid4().hex[:8]}"
    built = Template.build(_tpl(name), name)
    mine = {"X-API-Key": server.api_key}
    theirs = {"X-API-Key": other_key}
    for path in (f"/templates/{built.template_id}", f"/templates/aliases/{name}", f"/templates/{built.template_id}/tags",
                 f"/templates/{built.template_id}/builds/{built.build_id}/status"):
        response = httpx.get(server.url + path, headers=theirs)
        assert response.status_code == 404, path
        assert set(response.json()) == {"code", "message"}
    assert httpx.delete(f"{server.url}/templates/{built.template_id}", headers=theirs).status_code == 404
    assert httpx.patch(f"{server.url}/templates/{built.template_id}", json={"public": True}, headers=theirs).status_code == 404
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(name, api_key=other_key)
    # names are per team: the other team's `name` is a template of its own
    response = httpx.post(f"{server.url}/v3/templates", json={"name": name}, headers=theirs)
    assert response.status_code == 202 and response.json()["templateID"] != built.template_id
    assert httpx.delete(f"{server.url}/templates/{response.json()['templateID']}", headers=theirs).status_code == 204

    assert httpx.patch(f"{server.url}/templates/{built.template_id}", json={"public": True}, headers=mine).status_code == 200
    full = httpx.get(f"{server.url}/templates/{built.template_id}", headers=mine).json()["names"][0]
    with Sandbox.create(full, api_key=other_key, timeout=60) as sbx:   # another team's public: by its full name
        assert sbx.commands.run("cat /tmp/marker").stdout.strip() == name
    assert httpx.delete(f"{server.url}/templates/{built.template_id}", headers=theirs).status_code == 404

    sbx = Sandbox.create(name, timeout=60)
    response = httpx.delete(f"{server.url}/templates/{built.template_id}", headers=mine)
    assert response.status_code == 409 and "sandbox" in response.json()["message"]
    sbx.kill()
    assert httpx.delete(f"{server.url}/templates/{built.template_id}", headers=mine).status_code == 204
    assert httpx.get(f"{server.url}/templates/{built.template_id}", headers=mine).status_code == 404
    assert not Template.exists(name)


def test_bad_build_requests_are_e2b_errors(server: Server) -> None:
    headers = {"X-API-Key": server.api_key}
    for body in ({"name": "Upper-Case"}, {"name": "ok", "cpuCount": 999}, {"name": "x:bad tag"}, {}):
        response = httpx.post(f"{server.url}/v3/templates", json=body, headers=headers)
        assert response.status_code == 400, body
        assert set(response.json()) == {"code", "message"}
    created = httpx.post(f"{server.url}/v3/templates", json={"name": f"bad-{uuid.uuid4().hex[:8]}"}, headers=headers).json()
    start = f"{server.url}/v2/templates/{created['templateID']}/builds/{created['buildID']}"
    assert httpx.post(start, json={"steps": [{"type": "FROB", "args": []}]}, headers=headers).status_code == 400
    missing = {"type": "COPY", "args": ["a", "/a"], "filesHash": "0" * 64}
    response = httpx.post(start, json={"steps": [missing]}, headers=headers)
    assert response.status_code == 400 and "not uploaded" in response.json()["message"]
    link = httpx.get(f"{server.url}/templates/{created['templateID']}/files/{'1' * 64}", headers=headers)
    assert link.status_code == 201 and link.json()["present"] is False
    forged = link.json()["url"].split("token=")[0] + "token=1.abc.team"
    assert httpx.put(forged, content=b"x").status_code == 403
    assert httpx.put(link.json()["url"], content=b"not a tar").status_code == 400


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = server.env() | {"E2B_API_URL": server.url, "E2B_API_KEY": server.api_key}
    return subprocess.run([str(SANDLOT), "template", *args], env=env, capture_output=True, text=True, timeout=300)


def test_cli_builds_a_dockerfile_dir_and_manages_it(server: Server, tmp_path) -> None:
    marker = uuid.uuid4().hex[:8]
    (tmp_path / "hello.txt").write_text("hi from the context\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM e2bdev/base\nENV MARK={marker}\nWORKDIR /work\nCOPY hello.txt /work/\nRUN echo $MARK > /work/mark\nUSER user\n")
    name = f"cli-{marker}"
    built = _cli(server, "build", str(tmp_path), "--name", name, "--tag", "one")
    assert built.returncode == 0, built.stderr
    assert "RUN echo $MARK > /work/mark" in built.stderr and "Built " + name in built.stderr
    with Sandbox.create(f"{name}:one", timeout=60) as sbx:
        assert sbx.commands.run("cat hello.txt mark; echo $MARK; whoami").stdout.split() == [
            "hi", "from", "the", "context", marker, marker, "user"]
    listed = _cli(server, "list")
    assert listed.returncode == 0 and name in listed.stdout
    assert _cli(server, "tag", f"{name}:one", "two").returncode == 0
    assert {t.tag for t in Template.get_tags(name)} >= {"one", "two"}
    assert _cli(server, "tag", name, "two", "--remove").returncode == 0
    assert _cli(server, "delete", name).returncode == 0
    assert not Template.exists(name)
    failed = _cli(server, "delete", name)
    assert failed.returncode == 1 and "404" in failed.stderr


def test_legacy_v1_inline_dockerfile(server: Server) -> None:
    headers = {"X-API-Key": server.api_key}
    name = f"v1-{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM e2bdev/base\nRUN echo {name} > /tmp/v1\n"
    created = httpx.post(f"{server.url}/templates", json={"alias": name, "dockerfile": dockerfile}, headers=headers)
    assert created.status_code == 202, created.text
    tid, bid = created.json()["templateID"], created.json()["buildID"]
    assert httpx.post(f"{server.url}/templates/{tid}/builds/{bid}", headers=headers).status_code == 202
    status = {}
    for _ in range(300):
        status = httpx.get(f"{server.url}/templates/{tid}/builds/{bid}/status", headers=headers).json()
        if status["status"] in ("ready", "error"):
            break
        time.sleep(0.2)
    assert status["status"] == "ready", status
    with Sandbox.create(name, timeout=60) as sbx:
        assert sbx.commands.run("cat /tmp/v1").stdout.strip() == name
    bad = httpx.post(f"{server.url}/templates", json={"alias": name, "dockerfile": "FROM x\nCOPY a /a\n"}, headers=headers)
    assert bad.status_code == 400 and "COPY" in bad.json()["message"]

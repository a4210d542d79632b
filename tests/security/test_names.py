"""Template names are per team (docs/security/names-and-quotas.md): a hostile team that makes
public templates named like a registry image (``python:3.11-slim``), like a built-in (``base``)
or like another team's template cannot make anyone else's bare name, nor Prime's
``docker_image``, start its template. Canary: a file only the attacker's templates contain.
The legitimate features next to it: two teams each have their own ``app``, and another team's
public template is reachable by its full ``team-slug/name``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template
from e2b.exceptions import SandboxException
from sqlalchemy import text
from sqlalchemy.orm import Session

from sandlot.api.prime import image_refs
from sandlot.store.database import make_engine
from tests.e2e.prime_clients import call
from tests.e2e.server import SANDLOT, Server

pytestmark = pytest.mark.timeout(900)

CANARY = "canary-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def attacker_key(server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", "names-attacker", "--name", "t"], env=server.env(),
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _full_name(server: Server, key: str, template_id: str) -> str:
    return httpx.get(f"{server.url}/templates/{template_id}", headers=_headers(key)).json()["names"][0]


class World:
    app: str
    mine: str         # template ids
    theirs: str
    theirs_full: str  # the attacker's app by its full name
    python: str


@pytest.fixture(scope="module")
def world(server: Server, attacker_key: str) -> Iterator[World]:
    w = World()
    w.app = f"app-{uuid.uuid4().hex[:8]}"
    victim = Template().from_template("base").run_cmd("echo victim > /tmp/mark")
    poisoned = Template().from_template("base").run_cmd(f"echo {CANARY} > /tmp/canary-b && echo attacker > /tmp/mark")
    w.mine = Template.build(victim, w.app).template_id
    w.theirs = Template.build(poisoned, w.app, api_key=attacker_key).template_id
    w.python = Template.build(poisoned, "python:3.11-slim", api_key=attacker_key).template_id
    for template_id in (w.theirs, w.python):
        answer = httpx.patch(f"{server.url}/templates/{template_id}", json={"public": True}, headers=_headers(attacker_key))
        assert answer.status_code == 200
    w.theirs_full = _full_name(server, attacker_key, w.theirs)
    yield w
    for key, template_id in ((server.api_key, w.mine), (attacker_key, w.theirs), (attacker_key, w.python)):
        httpx.delete(f"{server.url}/templates/{template_id}", headers=_headers(key))


def _canary(sbx: Sandbox) -> str:
    return sbx.commands.run("cat /tmp/canary-b 2>/dev/null || echo absent").stdout.strip()


def test_two_teams_each_have_their_own_app_and_full_names_reach_public_ones(server: Server, attacker_key: str,
                                                                           world: World) -> None:
    assert world.mine != world.theirs
    with Sandbox.create(world.app, timeout=60) as sbx:   # the victim's bare name: its own template
        assert sbx.commands.run("cat /tmp/mark").stdout.strip() == "victim"
        assert _canary(sbx) == "absent"
    with Sandbox.create(world.app, timeout=60, api_key=attacker_key) as sbx:
        assert _canary(sbx) == CANARY
    namespace, _, bare = world.theirs_full.partition("/")
    assert namespace.startswith("team-") and bare == world.app
    with Sandbox.create(world.theirs_full, timeout=60) as sbx:   # explicit: another team's public template
        assert _canary(sbx) == CANARY
    assert Template.exists(world.theirs_full)
    listed = subprocess.run([str(SANDLOT), "template", "list", "--api-url", server.url, "--api-key", attacker_key],
                            check=True, capture_output=True, text=True).stdout
    assert world.theirs_full in listed   # the CLI shows full names


def test_a_public_registry_like_name_does_not_shadow_the_registry(server: Server, attacker_key: str,
                                                                 world: World) -> None:
    # E2B: the bare name is not the attacker's template (there is no registry on that side)
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create("python:3.11-slim", timeout=60)
    assert not Template.exists("python")
    python_full = _full_name(server, attacker_key, world.python)
    assert Template.exists(python_full) and python_full.endswith("/python")
    # Prime: `python:3.11-slim` is a registry pull, never the attacker's template. Decided by the
    # server's own resolver on its database (a real pull would leave this machine).
    engine = make_engine(server.database_url)
    try:
        with Session(engine) as session:
            team_id = session.execute(text("SELECT team_id FROM templates WHERE id = :id"), {"id": world.mine}).scalar_one()
            choice = image_refs.resolve(session, team_id, "python:3.11-slim")
            assert choice.registry_pull and choice.template_id is None
            assert image_refs.resolve(session, team_id, python_full).template_id == world.python   # explicit
            session.rollback()
    finally:
        engine.dispose()


def test_builtin_and_foreign_namespaces_cannot_be_written(server: Server, attacker_key: str, world: World) -> None:
    for name in ("base", "code-interpreter-v1", "base:latest"):
        answer = httpx.post(f"{server.url}/v3/templates", json={"name": name}, headers=_headers(attacker_key))
        assert answer.status_code == 409 and set(answer.json()) == {"code", "message"}, (name, answer.text)
    victim_full = _full_name(server, server.api_key, world.mine)
    answer = httpx.post(f"{server.url}/v3/templates", json={"name": victim_full}, headers=_headers(attacker_key))
    assert answer.status_code == 400 and "namespace" in answer.json()["message"]
    # the attacker's full name of its own is accepted and is the same template as the bare one
    own = world.theirs_full
    answer = httpx.post(f"{server.url}/v3/templates", json={"name": own}, headers=_headers(attacker_key))
    assert answer.status_code == 202 and answer.json()["templateID"] == world.theirs
    with Sandbox.create("base", timeout=60) as sbx:
        assert _canary(sbx) == "absent"
    # a private template of another team stays invisible by its full name
    assert httpx.get(f"{server.url}/templates/aliases/{victim_full}", headers=_headers(attacker_key)).status_code == 404
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create(victim_full, timeout=60, api_key=attacker_key)


def test_prime_docker_image_resolves_to_the_own_template_or_the_explicit_one(server: Server, world: World,
                                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    made = []
    try:
        own = call(server, home, "create_and_wait", {"name": "own", "docker_image": world.app, "timeout_minutes": 5})
        made.append(own["id"])
        out = call(server, home, "exec", own["id"], "cat /tmp/mark; cat /tmp/canary-b 2>/dev/null || echo absent")
        assert out["stdout"].split() == ["victim", "absent"], out
        base = call(server, home, "create_and_wait", {"name": "base", "docker_image": "base", "timeout_minutes": 5})
        made.append(base["id"])
        assert call(server, home, "exec", base["id"], "cat /tmp/canary-b 2>/dev/null || echo absent")["stdout"].strip() == "absent"
        theirs = call(server, home, "create_and_wait", {"name": "theirs", "docker_image": world.theirs_full,
                                                        "timeout_minutes": 5})
        made.append(theirs["id"])
        assert call(server, home, "exec", theirs["id"], "cat /tmp/canary-b")["stdout"].strip() == CANARY
    finally:
        for sandbox_id in made:
            call(server, home, "delete", sandbox_id)


def test_snapshot_names_are_per_team_too(server: Server, attacker_key: str) -> None:
    """Formerly server-wide: the attacker could squat a name (409 for the victim) or name its
    snapshot like the victim's snapshot id."""
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    attacker = Sandbox.create(timeout=120, api_key=attacker_key)
    victim = Sandbox.create(timeout=120)
    made = []
    try:
        attacker.files.write("/tmp/canary-b", CANARY)
        victim.files.write("/tmp/mark", "victim")
        squat = attacker.create_snapshot(name)
        own = victim.create_snapshot(name)                 # the same name, its own snapshot
        shadow = attacker.create_snapshot(own.snapshot_id)  # named like the victim's snapshot id
        assert len({squat.snapshot_id, own.snapshot_id, shadow.snapshot_id}) == 3
        for ref in (name, own.snapshot_id):
            clone = Sandbox.create(ref, timeout=60)
            made.append(clone)
            assert clone.files.read("/tmp/mark") == "victim" and _canary(clone) == "absent"
        theirs = Sandbox.create(name, timeout=60, api_key=attacker_key)
        made.append(theirs)
        assert _canary(theirs) == CANARY
        for key, snapshot in ((attacker_key, squat), (attacker_key, shadow), (server.api_key, own)):
            Sandbox.delete_snapshot(snapshot.snapshot_id, api_key=key)
    finally:
        for sbx in (attacker, victim, *made):
            sbx.kill()

"""Prime parity in-process (issue 15): checkpoints on the engine's snapshots, egress policies,
the background-job batch's errors, exitCode after an OOM kill, volumes' clear 400."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from sandlot.orchestrator.lifecycle import RUNNING
from sandlot.store.models import PrimeSandbox, Snapshot
from tests.inprocess.conftest import Stack
from tests.inprocess.test_prime import launched, prime_create, prime_headers


async def running(stack: Stack, **fields: object) -> str:
    sid: str = (await prime_create(stack, **fields))["id"]
    await launched(stack)
    assert stack.row(sid) is not None and stack.row(sid).state == RUNNING  # type: ignore[union-attr]
    return sid


def snapshot_rows(stack: Stack) -> list[Snapshot]:
    with stack.db.session() as session:
        return list(session.scalars(select(Snapshot)))


async def test_checkpoint_create_get_list_batch_delete(stack: Stack) -> None:
    h = prime_headers(stack)
    sid = await running(stack, labels=["exp"])
    made = await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)
    assert made.status_code == 201, made.text
    cp = made.json()
    assert cp["sandbox_id"] == sid and cp["state"] == "DURABLE" and cp["depth"] == 0 and cp["parent_id"] is None
    assert cp["docker_image"] == "base" and cp["team_id"] == stack.team_id
    [row] = snapshot_rows(stack)
    assert row.id == cp["id"] and row.memory is False and Path(row.path).is_dir()   # a filesystem checkpoint
    assert stack.row(sid).state == RUNNING   # type: ignore[union-attr]  # the sandbox keeps running
    second = (await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)).json()

    got = await stack.client.get(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=h)
    assert got.status_code == 200 and got.json() == cp
    listed = await stack.client.get(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)
    assert [c["id"] for c in listed.json()["checkpoints"]] == [cp["id"], second["id"]]   # oldest first
    only = await stack.client.get(f"/api/v1/sandbox/{sid}/checkpoints", params={"checkpoint_id": second["id"]}, headers=h)
    assert [c["id"] for c in only.json()["checkpoints"]] == [second["id"]]
    batch = await stack.client.post("/api/v1/sandbox/checkpoints:batchGet",
                                    json={"checkpoint_ids": [cp["id"], "nosuchcheckpoint"]}, headers=h)
    assert batch.status_code == 200, batch.text
    assert [c["id"] for c in batch.json()["checkpoints"]] == [cp["id"]]
    assert batch.json()["errors"] == [{"checkpoint_id": "nosuchcheckpoint", "code": "NOT_FOUND",
                                       "message": "Checkpoint nosuchcheckpoint not found"}]

    # another team sees none of it, and can neither read nor delete it
    other = prime_headers(stack, other=True)
    assert (await stack.client.get(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=other)).status_code == 404
    assert (await stack.client.delete(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=other)).status_code == 404
    assert (await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=other)).status_code == 404
    theirs = await stack.client.post("/api/v1/sandbox/checkpoints:batchGet", json={"checkpoint_ids": [cp["id"]]},
                                     headers=other)
    assert theirs.json()["checkpoints"] == [] and theirs.json()["errors"][0]["code"] == "NOT_FOUND"
    assert len(snapshot_rows(stack)) == 2

    deleted = await stack.client.delete(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=h)
    assert deleted.status_code == 204 and not Path(row.path).exists()
    missing = await stack.client.get(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=h)
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    wiped = await stack.client.delete(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)
    assert wiped.json() == {"deleted": [second["id"]], "errors": []}
    assert snapshot_rows(stack) == []


async def test_a_sandbox_from_a_checkpoint_keeps_its_image_spec_and_chains_lineage(stack: Stack) -> None:
    h = prime_headers(stack)
    sid = await running(stack, environment_vars={"A": "1"}, network_allowlist=["10.9.8.7"], cpu_cores=2)
    cp = (await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)).json()
    made = await stack.client.post("/api/v1/sandbox", headers=h, json={
        "name": "restored", "checkpoint_id": cp["id"], "labels": ["r"], "environment_vars": {"B": "2"}})
    assert made.status_code == 201, made.text
    body = made.json()
    new = body["id"]
    assert new != sid and body["status"] == "RUNNING" and body["gatewayAuth"]["job_id"] == new
    assert body["dockerImage"] == "base" and body["cpuCores"] == 2 and body["labels"] == ["r"]
    assert body["networkAllowlist"] == ["10.9.8.7"]   # the checkpoint's policy is kept
    row = stack.row(new)
    assert row is not None and row.state == RUNNING and row.env_vars == {"A": "1", "B": "2"}
    assert row.network == {"allowOut": ["10.9.8.7"], "denyOut": ["0.0.0.0/0"]}
    assert stack.row(sid).state == RUNNING   # type: ignore[union-attr]
    # a checkpoint of the restored sandbox names its parent
    child = (await stack.client.post(f"/api/v1/sandbox/{new}/checkpoints", headers=h)).json()
    assert child["parent_id"] == cp["id"] and child["depth"] == 1
    # deleting the parent leaves the restored sandbox and the child alone
    assert (await stack.client.delete(f"/api/v1/sandbox/checkpoints/{cp['id']}", headers=h)).status_code == 204
    assert stack.row(new).state == RUNNING   # type: ignore[union-attr]
    assert (await stack.client.get(f"/api/v1/sandbox/checkpoints/{child['id']}", headers=h)).status_code == 200
    # another team cannot start from this team's checkpoint
    theirs = await stack.client.post("/api/v1/sandbox", headers=prime_headers(stack, other=True),
                                     json={"name": "x", "checkpoint_id": child["id"]})
    assert theirs.status_code == 404 and set(theirs.json()) == {"detail"}
    # an explicit policy on the restore replaces the checkpoint's
    denied = await stack.client.post("/api/v1/sandbox", headers=h, json={
        "name": "d", "checkpoint_id": child["id"], "network_denylist": ["10.1.1.1"]})
    assert denied.status_code == 201, denied.text
    assert stack.row(denied.json()["id"]).network == {"allowOut": [], "denyOut": ["10.1.1.1"]}  # type: ignore[union-attr]


async def test_checkpoint_requests_that_cannot_work_answer_4xx(stack: Stack) -> None:
    h = prime_headers(stack)
    assert (await stack.client.post("/api/v1/sandbox/nosuch/checkpoints", headers=h)).status_code == 404
    assert (await stack.client.get("/api/v1/sandbox/nosuch/checkpoints", headers=h)).status_code == 404
    missing = await stack.client.post("/api/v1/sandbox", headers=h, json={"name": "x", "checkpoint_id": "nosuch"})
    assert missing.status_code == 404 and "nosuch" in missing.json()["detail"]
    both = await stack.client.post("/api/v1/sandbox", headers=h,
                                   json={"name": "x", "checkpoint_id": "c", "docker_image": "base"})
    assert both.status_code == 422 and set(both.json()) == {"detail"}
    too_many = await stack.client.post("/api/v1/sandbox/checkpoints:batchGet", headers=h,
                                       json={"checkpoint_ids": [f"c{i}" for i in range(101)]})
    assert too_many.status_code == 422
    sid = await running(stack)
    await stack.client.delete(f"/api/v1/sandbox/{sid}", headers=h)
    ended = await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)
    assert ended.status_code == 409 and "TERMINATED" in ended.json()["detail"]
    assert snapshot_rows(stack) == []


async def test_egress_policy_get_and_put_replace_the_engines_rules(stack: Stack) -> None:
    h = prime_headers(stack)
    sid = await running(stack, network_denylist=["10.0.0.1"])
    got = await stack.client.get(f"/api/v1/sandbox/{sid}/egress-policy", headers=h)
    assert got.json() == {"policy": {"allowlist": None, "denylist": ["10.0.0.1"]}, "generation": 1,
                          "applied_generation": 1, "applied": True}
    put = await stack.client.put(f"/api/v1/sandbox/{sid}/egress-policy", headers=h,
                                 json={"allowlist": ["10.2.3.4"], "denylist": None})
    assert put.status_code == 200, put.text
    assert put.json()["policy"] == {"allowlist": ["10.2.3.4"], "denylist": None} and put.json()["generation"] == 2
    row = stack.row(sid)
    assert row is not None and row.network == {"allowOut": ["10.2.3.4"], "denyOut": ["0.0.0.0/0"]}
    policy = stack.runtime.egress[row.ip or ""]
    assert policy is not None and not policy.is_open
    assert (await stack.client.get(f"/api/v1/sandbox/{sid}", headers=h)).json()["networkAllowlist"] == ["10.2.3.4"]
    # "allow everything" is an empty denylist: no rules left
    everything = await stack.client.put(f"/api/v1/sandbox/{sid}/egress-policy", headers=h,
                                        json={"allowlist": None, "denylist": []})
    assert everything.status_code == 200 and stack.row(sid).network == {"allowOut": [], "denyOut": []}  # type: ignore[union-attr]
    assert (await stack.client.get(f"/api/v1/sandbox/{sid}/egress-policy", headers=h)).json()["generation"] == 3
    # both or neither list, a bad entry, another team, an ended sandbox: 4xx and nothing changes
    for bad in ({"allowlist": ["1.1.1.1"], "denylist": ["2.2.2.2"]}, {}, {"allowlist": ["not an address!"]}):
        answer = await stack.client.put(f"/api/v1/sandbox/{sid}/egress-policy", headers=h, json=bad)
        assert answer.status_code == 422 and set(answer.json()) == {"detail"}, answer.text
    other = await stack.client.put(f"/api/v1/sandbox/{sid}/egress-policy", headers=prime_headers(stack, other=True),
                                   json={"denylist": ["1.1.1.1"]})
    assert other.status_code == 404
    assert stack.row(sid).network == {"allowOut": [], "denyOut": []}   # type: ignore[union-attr]
    await stack.client.delete(f"/api/v1/sandbox/{sid}", headers=h)
    ended = await stack.client.put(f"/api/v1/sandbox/{sid}/egress-policy", headers=h, json={"denylist": ["1.1.1.1"]})
    assert ended.status_code == 409


async def test_egress_policy_of_an_e2b_made_sandbox_is_derived(stack: Stack) -> None:
    sid = (await stack.create({"allow_internet_access": False}))["sandboxID"]
    got = await stack.client.get(f"/api/v1/sandbox/{sid}/egress-policy", headers=prime_headers(stack))
    assert got.status_code == 200 and got.json()["policy"] == {"allowlist": [], "denylist": None}


async def test_background_job_batch_reports_unknown_and_stopped_sandboxes_per_job(stack: Stack) -> None:
    h = prime_headers(stack)
    sid = await running(stack)
    await stack.client.delete(f"/api/v1/sandbox/{sid}", headers=h)
    theirs = await running(stack)
    jobs = [{"sandbox_id": "nosuch", "job_id": "0123abcd"}, {"sandbox_id": sid, "job_id": "deadbeef"},
            {"sandbox_id": theirs, "job_id": "00000000"}]
    answer = await stack.client.post("/api/v1/sandbox/background-jobs/status:batchGet", headers=prime_headers(
        stack, other=True), json={"jobs": jobs})
    assert answer.status_code == 200, answer.text
    assert answer.json()["statuses"] == []
    assert [(e["job_id"], e["code"]) for e in answer.json()["errors"]] == [
        ("0123abcd", "NOT_FOUND"), ("deadbeef", "NOT_FOUND"), ("00000000", "NOT_FOUND")]
    mine = await stack.client.post("/api/v1/sandbox/background-jobs/status:batchGet", headers=h,
                                   json={"jobs": jobs[1:2]})
    assert mine.json()["errors"][0]["code"] == "NOT_RUNNING"
    # a job id that is not the SDK's 8 hex digits never reaches a shell
    for job_id in ("../../etc", "0123abc;", "0123abcde"):
        bad = await stack.client.post("/api/v1/sandbox/background-jobs/status:batchGet", headers=h,
                                      json={"jobs": [{"sandbox_id": theirs, "job_id": job_id}]})
        assert bad.status_code == 422 and set(bad.json()) == {"detail"}


async def test_an_oom_killed_sandbox_reports_exit_code_137(stack: Stack) -> None:
    sid = await running(stack)
    assert (await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))).json()["exitCode"] is None
    stack.runtime.die(sid, oom=True)
    await stack.manager.bury_dead()
    got = (await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))).json()
    assert got["status"] == "ERROR" and got["exitCode"] == 137


async def test_volume_crud_and_what_answers_404_or_400(stack: Stack) -> None:
    """Without disks: CRUD of the named volume, unknown names, unattached publish (the copies and
    publish itself: tests/e2e/test_prime_volumes.py)."""
    h = prime_headers(stack)
    sid = await running(stack)
    made = await stack.client.post("/api/v1/sandbox/volumes", headers=h, json={"name": "data"})
    assert made.status_code == 201 and made.json()["name"] == "data" and made.json()["head_checkpoint_id"] is None
    assert (await stack.client.post("/api/v1/sandbox/volumes", headers=h, json={"name": "data"})).status_code == 409
    listed = (await stack.client.get("/api/v1/sandbox/volumes", headers=h)).json()
    assert [v["name"] for v in listed["volumes"]] == ["data"] and listed["total"] == 1 and listed["has_next"] is False
    assert (await stack.client.get("/api/v1/sandbox/volumes/data", headers=h)).json()["id"] == made.json()["id"]
    publish = await stack.client.post(f"/api/v1/sandbox/{sid}/volumes/data/publish", headers=h, json={})
    assert publish.status_code == 404
    created = await stack.client.post("/api/v1/sandbox", headers=h, json={
        "name": "v", "docker_image": "base", "volumes": [{"name": "nope", "mount_path": "/data"}]})
    assert created.status_code == 404
    bad_path = await stack.client.post("/api/v1/sandbox", headers=h, json={
        "name": "v", "docker_image": "base", "volumes": [{"name": "data", "mount_path": "/proc/x"}]})
    assert bad_path.status_code == 422
    with stack.db.session() as session:
        assert [p.id for p in session.scalars(select(PrimeSandbox))] == [sid]
    assert (await stack.client.delete("/api/v1/sandbox/volumes/data", headers=h)).status_code == 204
    assert (await stack.client.get("/api/v1/sandbox/volumes/data", headers=h)).status_code == 404


def add_image(stack: Stack, team_id: str, name: str, tag: str) -> str:
    from sandlot.api.prime.image_builds import new_row

    row = new_row(team_id, name, tag, source_image=None, dockerfile_path="Dockerfile")
    row.status = "COMPLETED"
    with stack.db.session() as session, session.begin():
        session.add(row)
    return row.full_image_path


def visibilities(stack: Stack) -> dict[str, str]:
    from sandlot.store.models import PrimeImageBuild

    with stack.db.session() as session:
        return {r.full_image_path: r.visibility for r in session.scalars(select(PrimeImageBuild))}


async def test_patch_images_changes_visibility_of_own_images_only(stack: Stack) -> None:
    h = prime_headers(stack)
    mine = add_image(stack, stack.team_id, "app", "v1")
    other_team = stack.other_team_id
    theirs = add_image(stack, other_team, "app", "v1")
    body = {"mode": "explicit", "updates": [
        {"source": {"owner": {"type": "personal"}, "name": "app", "tag": "v1"}, "set": {"visibility": "PUBLIC"}}]}
    dry = await stack.client.patch("/api/v1/images", headers=h, json={**body, "dryRun": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["dryRun"] is True and dry.json()["results"][0]["after"]["visibility"] == "PUBLIC"
    assert visibilities(stack) == {mine: "PRIVATE", theirs: "PRIVATE"}
    done = await stack.client.patch("/api/v1/images", headers=h, json=body)
    result = done.json()["results"][0]
    assert done.json()["success"] is True and result["before"]["visibility"] == "PRIVATE"
    assert result["after"] == {"owner": {"type": "personal"}, "name": "app", "tag": "v1", "visibility": "PUBLIC"}
    assert visibilities(stack) == {mine: "PUBLIC", theirs: "PRIVATE"}
    # by reference, plain or with the team's own prefix; another team's prefix is not found
    back = await stack.client.patch("/api/v1/images", headers=h, json={"updates": [
        {"source": {"reference": mine}, "set": {"visibility": "PRIVATE"}},
        {"source": {"reference": theirs}, "set": {"visibility": "PUBLIC"}},
        {"source": {"owner": {"type": "team", "teamId": other_team}, "name": "app", "tag": "v1"},
         "set": {"visibility": "PUBLIC"}},
        {"source": {"reference": "nosuch:v1"}, "set": {"visibility": "PUBLIC"}}]})
    codes = [(r["success"], (r["error"] or {}).get("code")) for r in back.json()["results"]]
    assert codes == [(True, None), (False, "NOT_FOUND"), (False, "NOT_FOUND"), (False, "NOT_FOUND")]
    assert back.json()["success"] is False
    assert visibilities(stack) == {mine: "PRIVATE", theirs: "PRIVATE"}


async def test_patch_images_that_cannot_work_say_so(stack: Stack) -> None:
    h = prime_headers(stack)
    mine = add_image(stack, stack.team_id, "app", "v1")
    answer = await stack.client.patch("/api/v1/images", headers=h, json={"updates": [
        {"source": {"reference": "app:v1"}, "set": {"name": "renamed"}},
        {"source": {"reference": "app:v1"}, "set": {"owner": {"type": "platform"}, "visibility": "PUBLIC"}}]})
    assert answer.status_code == 200
    assert [r["error"]["code"] for r in answer.json()["results"]] == ["UNSUPPORTED", "UNSUPPORTED"]
    assert "not supported" in answer.json()["results"][0]["error"]["message"]
    assert visibilities(stack) == {mine: "PRIVATE"}
    for bad in ({"updates": []}, {"mode": "search", "updates": [{"source": {"reference": "app:v1"}, "set": {"tag": "x"}}]},
                {"updates": [{"source": {"reference": "app:v1"}, "set": {}}]},
                {"updates": [{"source": {"reference": "app:v1"}, "set": {"visibility": "SECRET"}}]}):
        rejected = await stack.client.patch("/api/v1/images", headers=h, json=bad)
        assert rejected.status_code == 422 and set(rejected.json()) == {"detail"}, bad


async def test_a_restore_honours_idempotency_keys_and_the_teams_quota(stack: Stack) -> None:
    h = prime_headers(stack)
    sid = await running(stack)
    cp = (await stack.client.post(f"/api/v1/sandbox/{sid}/checkpoints", headers=h)).json()
    body = {"name": "r", "checkpoint_id": cp["id"], "idempotency_key": "restore-once"}
    first = await stack.client.post("/api/v1/sandbox", headers=h, json=body)
    again = await stack.client.post("/api/v1/sandbox", headers=h, json=body)
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert len(stack.runtime.sandboxes) == 2
    stack.settings.quota_concurrent_sandboxes = 2
    over = await stack.client.post("/api/v1/sandbox", headers=h, json={"name": "r2", "checkpoint_id": cp["id"]})
    assert over.status_code == 429 and set(over.json()) == {"detail"}
    assert len(stack.runtime.sandboxes) == 2
    with stack.db.session() as session:
        assert len(list(session.scalars(select(PrimeSandbox)))) == 2

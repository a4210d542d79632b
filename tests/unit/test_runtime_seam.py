"""The runtime seam: ``RuncRuntime`` and ``FakeRuntime`` both are the whole ``Runtime`` protocol,
and ``FakeRuntime`` keeps runc's lifecycle rules (in-process: no root, no runc started)."""
from __future__ import annotations

import inspect
import socket
from pathlib import Path

import pytest

from sandlot.runtime.base import CriuUnavailable, PauseRecovery, Runtime, SandboxRuntimeError, SandboxSpec
from sandlot.runtime.egress import ALL_IPV4, EgressPolicy
from sandlot.runtime.fake import FakeRuntime
from sandlot.runtime.runc import RuncRuntime

PROTOCOL_ATTRS = ("criu_error", "before_start")


def protocol_members() -> dict[str, object]:
    """Methods and properties the protocol declares (its data attributes are checked apart)."""
    return {name: value for name, value in vars(Runtime).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))}


def signature_shape(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


def test_the_protocol_is_what_the_issue_lists() -> None:
    members = set(protocol_members())
    assert {"create", "kill", "pause", "resume", "snapshot", "clone", "recover_pause", "set_egress",
            "clear_egress", "egress_rules", "memory_bytes", "free_bytes", "init_pid"} <= members
    assert set(PROTOCOL_ATTRS) <= set(Runtime.__annotations__)


@pytest.mark.parametrize("impl", [RuncRuntime, FakeRuntime])
def test_implementations_define_every_member_with_the_protocols_signature(impl: type) -> None:
    for name, declared in protocol_members().items():
        if name in HOST_VALUES:   # read-only values an instance may hold as plain attributes
            continue
        actual = inspect.getattr_static(impl, name, None)
        assert actual is not None, f"{impl.__name__} lacks {name}"
        if isinstance(declared, property):
            assert isinstance(actual, property), f"{impl.__name__}.{name} must be a property"
            continue
        assert inspect.isfunction(actual), f"{impl.__name__}.{name} must be a method"
        assert signature_shape(actual) == signature_shape(declared), f"{impl.__name__}.{name}"
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(declared), \
            f"{impl.__name__}.{name}: async must match the protocol"


HOST_VALUES = ("cgroup_parent", "userns")


def test_implementations_hold_the_host_values(tmp_path: Path) -> None:
    runc = RuncRuntime(tmp_path / "data", tmp_path / "run", cgroup_parent="sbx", userns=None)
    assert (runc.cgroup_parent, runc.userns) == ("sbx", None)
    fake = FakeRuntime()
    assert (fake.cgroup_parent, fake.userns) == (None, None)


def test_runc_runtime_is_a_runtime_without_touching_the_host(tmp_path: Path) -> None:
    rt = RuncRuntime(tmp_path / "data", tmp_path / "run", allow_private=["192.168.7.0/24"])
    assert isinstance(rt, Runtime)
    assert rt.criu_error is None and rt.before_start is None
    assert rt.egress_rules is True
    assert rt.network.allow_private == ("192.168.7.0/24",)
    assert rt.memory_bytes("nosuchsandbox") == 0
    assert not (tmp_path / "run").exists()   # constructing changes nothing on the host


def spec(sandbox_id: str, memory_mb: int = 256) -> SandboxSpec:
    return SandboxSpec(sandbox_id=sandbox_id, layers=[Path("/layers/base")], cpu_count=1, memory_mb=memory_mb,
                       pids_limit=64, args=["/envd"], env={}, disk_mb=1024)


async def test_fake_runtime_create_list_kill() -> None:
    rt = FakeRuntime()
    assert isinstance(rt, Runtime)
    a = await rt.create(spec("a1"))
    b = await rt.create(spec("b1"))
    assert a.ip.startswith("127.0.77.") and b.ip.startswith("127.0.77.") and a.ip != b.ip
    assert [h.sandbox_id for h in await rt.list()] == ["a1", "b1"]
    assert await rt.is_alive("a1")
    with pytest.raises(SandboxRuntimeError, match="already exists"):
        await rt.create(spec("a1"))
    with pytest.raises(ValueError):
        await rt.create(spec("Not/An/Id"))
    await rt.kill("a1")
    await rt.kill("a1")   # idempotent, as runc's teardown
    assert [h.sandbox_id for h in await rt.list()] == ["b1"]
    assert not await rt.is_alive("a1")
    c = await rt.create(spec("c1"))
    assert c.ip == a.ip   # a killed sandbox's address is free again


async def test_fake_runtime_addresses_are_bindable_loopback() -> None:
    rt = FakeRuntime(octet=78)
    handle = await rt.create(spec("bind1"))
    with socket.socket() as s:
        s.bind((handle.ip, 0))   # a test can serve a fake envd or upstream there
        assert s.getsockname()[0] == handle.ip


async def test_fake_runtime_pause_resume_keeps_the_address() -> None:
    rt = FakeRuntime()
    h = await rt.create(spec("p1", memory_mb=512))
    assert rt.memory_bytes("p1") == 256 * 2**20
    rt.memory["p1"] = 7
    assert rt.memory_bytes("p1") == 7
    timings = await rt.pause("p1")
    assert "total" in timings
    assert rt.paused_ids() == ["p1"] and await rt.list() == []
    assert not await rt.is_alive("p1") and rt.memory_bytes("p1") == 0 and rt.usage("p1") is None
    with pytest.raises(SandboxRuntimeError):
        await rt.pause("p1")   # not running
    resumed = await rt.resume("p1")
    assert resumed.ip == h.ip and not resumed.rebooted
    assert rt.paused_ids() == ["p1"]   # the image stays until the sandbox answered
    rt.finish_resume("p1")
    assert rt.paused_ids() == [] and await rt.is_alive("p1")
    with pytest.raises(SandboxRuntimeError, match="not paused"):
        await rt.resume("p1")


async def test_fake_runtime_filesystem_pause_reboots_and_abort_stays_paused() -> None:
    rt = FakeRuntime()
    await rt.create(spec("f1"))
    rt.criu_error = "no CRIU here"
    with pytest.raises(CriuUnavailable):
        await rt.pause("f1")
    assert await rt.is_alive("f1")   # left running
    await rt.pause("f1", memory=False)   # needs no CRIU
    handle = await rt.resume("f1")
    assert handle.rebooted
    await rt.abort_resume("f1")
    assert rt.paused_ids() == ["f1"] and not await rt.is_alive("f1")


async def test_fake_runtime_recover_pause() -> None:
    rt = FakeRuntime()
    h = await rt.create(spec("r1"))
    await rt.create(spec("r2"))
    await rt.create(spec("r3"))
    await rt.pause("r2")
    rt.freeze("r1")   # a server killed mid-snapshot
    rt.die("r3")
    assert await rt.recover_pause("r1") == PauseRecovery("running", h.ip)
    assert await rt.is_alive("r1")
    assert await rt.recover_pause("r2") == PauseRecovery("paused")
    assert await rt.recover_pause("r3") == PauseRecovery("lost")
    assert await rt.recover_pause("gone1") == PauseRecovery("lost")


async def test_fake_runtime_death_oom_and_thaw() -> None:
    rt = FakeRuntime()
    await rt.create(spec("d1"))
    await rt.create(spec("d2"))
    rt.die("d1", oom=True)
    assert not await rt.is_alive("d1") and rt.oom_killed("d1")
    assert [h.sandbox_id for h in await rt.list()] == ["d1", "d2"]   # listed until killed, as runc's
    rt.freeze("d2")
    assert await rt.is_alive("d2")
    assert await rt.thaw_if_frozen("d2") is True
    assert await rt.thaw_if_frozen("d2") is False
    assert rt.init_pid("d2") is None
    usage = rt.usage("d2")
    assert usage is not None and usage.mem_total == 256 * 2**20


async def test_fake_runtime_snapshot_and_clone(tmp_path: Path) -> None:
    rt = FakeRuntime()
    source = await rt.create(spec("s1"))
    dest = tmp_path / "snaps" / "snap1"
    await rt.snapshot("s1", dest)
    assert (dest / "snapshot.json").is_file()
    assert await rt.is_alive("s1")   # keeps running
    with pytest.raises(FileExistsError):
        await rt.snapshot("s1", dest)
    policy = EgressPolicy(deny=(ALL_IPV4,))
    clone = await rt.clone(dest, "c1", egress=policy)
    assert clone.ip != source.ip and await rt.is_alive("c1")
    assert rt.egress[clone.ip] == policy
    with pytest.raises(SandboxRuntimeError, match="not a snapshot"):
        await rt.clone(tmp_path / "empty", "c2")
    rt.criu_error = "no CRIU here"
    with pytest.raises(CriuUnavailable):
        await rt.snapshot("s1", tmp_path / "snap2")
    with pytest.raises(CriuUnavailable):
        await rt.clone(dest, "c3")
    await rt.snapshot("s1", tmp_path / "snap3", memory=False)
    assert (await rt.clone(tmp_path / "snap3", "c4")).sandbox_id == "c4"


async def test_fake_runtime_keeps_the_upper_for_builds(tmp_path: Path) -> None:
    rt = FakeRuntime()
    await rt.create(spec("k1"))
    await rt.kill_keeping_upper("k1", tmp_path / "layer")
    assert (tmp_path / "layer").is_dir() and await rt.list() == []


async def test_fake_runtime_egress() -> None:
    rt = FakeRuntime()
    h = await rt.create(spec("e1"))
    assert rt.egress_rules and not FakeRuntime(egress_rules=False).egress_rules
    policy = EgressPolicy(allow=("1.1.1.1/32",), deny=(ALL_IPV4,))
    await rt.set_egress(h.ip, policy)
    assert rt.egress[h.ip] == policy
    with pytest.raises(SandboxRuntimeError):
        await rt.set_egress("10.0.0.9", policy)
    await rt.clear_egress(h.ip)
    assert rt.egress[h.ip] == EgressPolicy(deny=(ALL_IPV4,))   # closed, as Network.clear_policy
    await rt.kill("e1")
    again = await rt.create(spec("e2"))
    assert again.ip == h.ip and again.ip not in rt.egress   # a reused address starts open


async def test_fake_runtime_failure_injection_and_hooks() -> None:
    rt = FakeRuntime()
    started: list[str] = []

    async def before() -> None:
        started.append("x")

    rt.before_start = before
    rt.fail_next["create"] = SandboxRuntimeError("runc create failed")
    with pytest.raises(SandboxRuntimeError, match="runc create failed"):
        await rt.create(spec("i1"))
    assert await rt.list() == []   # nothing left behind
    await rt.create(spec("i1"))    # one failure only
    rt.fail_next["pause"] = OSError(28, "No space left on device")
    with pytest.raises(OSError):
        await rt.pause("i1")
    assert await rt.is_alive("i1")
    await rt.pause("i1")
    await rt.resume("i1")
    assert started == ["x", "x"]   # the second create and the resume (the injected failure came first)
    assert ("pause", "i1") in rt.calls and ("resume", "i1") in rt.calls
    await rt.start()
    assert rt.started
    await rt.close()
    assert not rt.started
    assert rt.free_bytes() == rt.free_disk

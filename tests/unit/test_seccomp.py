"""Translation of the containers seccomp profile to runc's form (``runtime/seccomp.py``)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from sandlot.runtime import seccomp
from sandlot.runtime.bundle import DEFAULT_CAPS

SRC = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
    "syscalls": [
        {"names": ["read", "write", "clone", "unshare", "mount", "keyctl", "socket"], "action": "SCMP_ACT_ALLOW",
         "args": [], "comment": "", "includes": {}, "excludes": {}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_PTRACE"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["future_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        {"names": ["notified"], "action": "SCMP_ACT_NOTIFY"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
    ],
}


def names_with(profile: dict, action: str) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == action and "args" not in r for n in r["names"]}


def test_conditions_resolve_for_the_granted_caps_arch_and_kernel() -> None:
    out = seccomp.translate(SRC, DEFAULT_CAPS, "x86_64", (6, 1))
    allowed = names_with(out, "SCMP_ACT_ALLOW")
    assert {"read", "write", "chroot", "arch_prctl"} <= allowed
    assert not {"ptrace", "set_tls", "future_call", "notified"} & allowed   # cap, arch, kernel, action
    assert "chroot" not in names_with(out, "SCMP_ACT_ERRNO")
    assert out["defaultAction"] == "SCMP_ACT_ERRNO" and out["defaultErrnoRet"] == errno.ENOSYS
    assert out["architectures"] == ["SCMP_ARCH_X86_64"]   # no i386/x32 entry points
    assert all(set(r) <= {"names", "action", "errnoRet", "args"} for r in out["syscalls"])
    personality = [r for r in out["syscalls"] if r["names"] == ["personality"]]
    assert personality[0]["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]


def test_sandlot_denials_override_the_profile_allowances() -> None:
    out = seccomp.translate(SRC, DEFAULT_CAPS, "x86_64", (6, 1))
    allowed = names_with(out, "SCMP_ACT_ALLOW")
    assert not {"mount", "keyctl", "clone", "unshare", "socket"} & allowed
    assert {"mount", "keyctl", "bpf", "io_uring_setup"} <= names_with(out, "SCMP_ACT_ERRNO")
    clone_allow = [r for r in out["syscalls"] if r["names"] == ["clone"] and r["action"] == "SCMP_ACT_ALLOW"]
    # runc: ``value`` is libseccomp's mask, ``valueTwo`` the datum
    assert clone_allow[0]["args"] == [{"index": 0, "value": seccomp.CLONE_NS_FLAGS, "valueTwo": 0,
                                       "op": "SCMP_CMP_MASKED_EQ"}]
    socket_allow = {r["args"][0]["value"] for r in out["syscalls"]
                    if "socket" in r["names"] and r["action"] == "SCMP_ACT_ALLOW"}
    assert socket_allow == set(seccomp.SOCKET_FAMILIES)
    # every argument-filtered rule that denies is paired with an exact-match allow: a deny
    # rule on an int argument alone could be dodged through its upper 32 bits
    assert [r for r in out["syscalls"] if r["names"] == ["clone3"]][0]["errnoRet"] == errno.ENOSYS


def test_the_packaged_profile_translates() -> None:
    if not seccomp.PROFILE_PATH.exists():
        pytest.skip(f"{seccomp.PROFILE_PATH} not installed")
    out = seccomp.profile(DEFAULT_CAPS)
    allowed = names_with(out, "SCMP_ACT_ALLOW")
    assert {"read", "execve", "futex", "epoll_wait", "chroot", "setuid"} <= allowed
    assert not set(seccomp.DENIED) & allowed
    assert json.loads(json.dumps(out)) == out


def test_a_missing_profile_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(seccomp.SeccompProfileError, match="golang-github-containers-common"):
        seccomp.profile(DEFAULT_CAPS, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(seccomp.SeccompProfileError, match="unreadable"):
        seccomp.profile(DEFAULT_CAPS, tmp_path / "bad.json")


async def test_the_server_does_not_start_without_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sandlot serve`` stops at start-up (the runtime's ``start``), before touching the host."""
    from sandlot.runtime.runc import RuncRuntime

    monkeypatch.setattr(seccomp, "PROFILE_PATH", tmp_path / "missing.json")
    runtime = RuncRuntime(tmp_path / "data", tmp_path / "state", nft_table="sandlot_unit_nope")
    with pytest.raises(seccomp.SeccompProfileError, match="apt-get install golang-github-containers-common"):
        await runtime.start()
    assert not (tmp_path / "state").exists()

"""Warm-pool sandboxes are never without an envd token (the end-to-end check, with a real
pool and envd, is ``tests/security/test_credentials.py``)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx

from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.orchestrator.warm_pool import BootTokens, WarmPool, load_key
from sandlot.runtime.base import SandboxHandle, SandboxSpec
from sandlot.store.models import Build


def test_key_is_private_and_kept(tmp_path: Path) -> None:
    key = load_key(tmp_path)
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / "warm-pool.key").stat().st_mode) == 0o600
    assert load_key(tmp_path) == key


class FakeRuntime:
    def __init__(self) -> None:
        self.killed: list[str] = []

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        return SandboxHandle(spec.sandbox_id, "10.1.2.3")

    async def kill(self, sandbox_id: str) -> None:
        self.killed.append(sandbox_id)

    def foreground(self, sandbox_id: str) -> None:
        pass


def spec(sandbox_id: str) -> SandboxSpec:
    return SandboxSpec(sandbox_id=sandbox_id, layers=[], cpu_count=1, memory_mb=64, pids_limit=64, args=[], env={})


def test_pooled_sandboxes_get_their_own_token_and_claims_use_it(tmp_path: Path) -> None:
    inits: list[tuple[str | None, dict]] = []

    def envd(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(204)
        inits.append((request.headers.get("x-access-token"), json.loads(request.content)))
        return httpx.Response(204)

    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(envd))
        tokens = BootTokens(tmp_path)
        pool = WarmPool(FakeRuntime(), EnvdAgent(49983, 5, 5, http), tokens,  # type: ignore[arg-type]
                        lambda sid, build: spec(sid), size=1)  # type: ignore[arg-type]
        build, other = Build(id="build-a"), Build(id="build-b")
        boot = tokens.boot_token(build)
        assert boot == tokens.boot_token(Build(id="build-a")) != tokens.boot_token(other)
        assert len(boot) == 64
        pool.want(build)
        await pool.settled()
        # booted with the build's boot token, then rotated to a random one of its own
        assert len(inits) == 1
        sent, body = inits[0]
        assert sent == boot and set(body) == {"accessToken"} and body["accessToken"] not in ("", boot)
        handle = pool.claim(build)
        assert handle is not None and pool.token_of(handle, build) == body["accessToken"]
        await pool.initialize(handle, build, {"accessToken": "team-token"})
        assert (body["accessToken"], {"accessToken": "team-token"}) in inits
        # a sandbox restored outside the pool still has the boot token
        assert pool.token_of(SandboxHandle("restored", "10.1.2.4"), build) == boot
        await pool.close()
        await http.aclose()

    asyncio.run(scenario())

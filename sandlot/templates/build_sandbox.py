"""A throw-away sandbox that runs one build step on a stack of layers.

It is a real sandbox (runc container, own netns with NAT, envd as pid 1) that is
never registered in the store; after the step its overlay upper dir is taken as
the step's layer, or simply discarded. Build sandbox ids start with ``b`` so a
crashed build's container is recognised and removed as an orphan at start-up.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from sandlot.orchestrator.envd_client import EnvdShell, Target, wait_healthy
from sandlot.runtime import idmap
from sandlot.runtime.base import BindMount, Runtime, SandboxSpec
from sandlot.runtime.overlay import has_bash
from sandlot.settings import Settings
from sandlot.templates.steps import BuildConfig

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_build_sandbox_id() -> str:
    return "b" + "".join(secrets.choice(_ALPHABET) for _ in range(20))


class BuildSandboxes:
    """Opens build sandboxes on the server's runtime."""

    def __init__(self, settings: Settings, runtime: Runtime, envd_launch, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.runtime = runtime
        self.envd_launch = envd_launch
        self.http = http

    def _spec(self, sandbox_id: str, layers: list[Path], config: BuildConfig, token: str, cpu_count: int,
              memory_mb: int, mounts: list[BindMount]) -> SandboxSpec:
        argv, env = self.envd_launch(self.settings.envd_port)
        env = dict(env)
        env["SANDLOT_ENVD_INIT"] = json.dumps(
            {"envVars": config.env, "accessToken": token, "defaultUser": "root", "defaultWorkdir": "/"}
        )
        env["SANDLOT_ENVD_PORT"] = str(self.settings.envd_port)
        all_mounts = [BindMount(self.settings.envd_runtime_dir, "/.sandlot", read_only=True)]
        if self.settings.trust_host_ca and self.settings.host_ca_bundle.exists():
            all_mounts.append(BindMount(self.settings.host_ca_bundle, "/etc/ssl/certs/ca-certificates.crt", read_only=True))
        return SandboxSpec(
            sandbox_id=sandbox_id, layers=layers, cpu_count=cpu_count,
            memory_mb=max(memory_mb, self.settings.build_min_memory_mb), pids_limit=self.settings.pids_limit,
            disk_mb=self.settings.build_disk_mb,   # a build's RUN steps fill their own disk, not the host's
            args=argv, env=env, mounts=all_mounts + mounts, hostname="e2b",
        )

    @asynccontextmanager
    async def open(self, layers: list[Path], config: BuildConfig, *, cpu_count: int, memory_mb: int,
                   keep_upper: Path | None = None, mounts: list[BindMount] | None = None) -> AsyncIterator[EnvdShell]:
        """Yield a running build sandbox; afterwards its upper dir goes to ``keep_upper``
        (only if the body succeeded) and the sandbox is always removed."""
        sandbox_id = new_build_sandbox_id()
        token = secrets.token_hex(16)
        rng = self.runtime.userns
        if rng is not None:
            # RUN steps are tenant code too: the build sandbox has the user namespace as well
            # (its upper is shifted back to 0-based when it becomes a layer, runtime side).
            # A COPY context is host-extracted: its owners move into the range so the
            # sandbox's root reads even 0600 files and ``cp -a`` keeps the archive's owners.
            for m in mounts or []:
                if Path(m.source).is_dir():
                    await asyncio.to_thread(idmap.shift_tree, Path(m.source), rng)
        spec = self._spec(sandbox_id, layers, config, token, cpu_count, memory_mb, mounts or [])
        handle = await self.runtime.create(spec)
        ok = False
        try:
            await wait_healthy(self.http, handle.ip, self.settings.envd_port, self.settings.envd_start_timeout_s)
            yield EnvdShell(Target(handle.ip, self.settings.envd_port, token), config.user, config.workdir,
                            config.env, has_bash(layers), self.http, self.settings.build_step_timeout_s)
            ok = True
        finally:
            if ok and keep_upper is not None:
                await self.runtime.kill_keeping_upper(sandbox_id, keep_upper)
            else:
                await self.runtime.kill(sandbox_id)

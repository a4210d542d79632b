"""How a sandbox of a build comes up: its runtime spec, envd's identity, the template's start command.

Shared by a cold create, the warm pool, post-ready snapshots (build time) and a
filesystem-only resume (``reidentify``), so all four give a sandbox the same identity.
"""

from __future__ import annotations

import json
from pathlib import Path

from sandlot.egress.ca import current_bundle
from sandlot.egress.config import needs_proxy
from sandlot.blobstore import BlobError
from sandlot.orchestrator.envd_client import EnvdAgent, EnvdInitError
from sandlot.orchestrator.errors import OperationFailed
from sandlot.orchestrator.requests import DEFAULT_USER, DEFAULT_WORKDIR, EnvdLauncher
from sandlot.orchestrator.warm_pool import BootTokens
from sandlot.runtime.base import BindMount, SandboxHandle, SandboxSpec
from sandlot.runtime.overlay import has_bash
from sandlot.settings import Settings
from sandlot.store.models import Build, Sandbox
from sandlot.templates.layer_blobs import LayerBlobs, LayerUnavailable


SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "PIP_CERT")
"""Pointed at the system bundle (which holds the egress CA) in sandboxes whose traffic the
egress proxy intercepts, so Python's requests, Node and pip trust it as curl does."""


def envd_init(row: Sandbox, build: Build) -> dict[str, object]:
    """envd's ``/init`` body: a built template's ENV/USER/WORKDIR (issue 6); the create request's envs win."""
    ca_env = {name: SYSTEM_BUNDLE for name in CA_ENV} if needs_proxy(row.network)[0] else {}
    return {
        "envVars": {**ca_env, **(build.env_vars or {}), **(row.env_vars or {})},
        "accessToken": row.envd_access_token,
        "defaultUser": build.default_user or DEFAULT_USER,
        "defaultWorkdir": build.default_workdir or DEFAULT_WORKDIR,
    }


class Boot:
    def __init__(self, settings: Settings, envd: EnvdAgent, envd_launch: EnvdLauncher, tokens: BootTokens) -> None:
        self.settings = settings
        self.envd = envd
        self.envd_launch = envd_launch
        self.tokens = tokens
        self.proc_mounts: list[BindMount] = []
        """lxcfs views of /proc files, once the manager has lxcfs running."""
        self.layers = LayerBlobs(settings)
        """Where a build's layers are on this host (under ``sandlot node``: fetched from the blob store)."""

    async def ensure_layers(self, build: Build) -> list[Path]:
        """The build's layers on this host, fetched first when another node built them
        (``templates/layer_blobs.py``; a no-op on a single box)."""
        try:
            return await self.layers.ensure(build)
        except (LayerUnavailable, BlobError) as exc:
            raise OperationFailed(f"Template build {build.id} cannot start on this node: {exc}") from exc

    def spec(self, row: Sandbox, build: Build) -> SandboxSpec:
        argv, env = self.envd_launch(self.settings.envd_port)
        env = dict(env)
        env["SANDLOT_ENVD_INIT"] = json.dumps(envd_init(row, build))
        env["SANDLOT_ENVD_PORT"] = str(self.settings.envd_port)
        mounts = [BindMount(self.settings.envd_runtime_dir, "/.sandlot", read_only=True)]
        if self.settings.trust_host_ca and self.settings.host_ca_bundle.exists():
            # the host's bundle plus the egress proxy's CA when the server has one (sandlot/egress/ca.py)
            egress = current_bundle(self.settings.data_dir, self.settings.host_ca_bundle)
            bundle = egress or self.settings.host_ca_bundle
            mounts.append(BindMount(bundle, SYSTEM_BUNDLE, read_only=True))
        mounts += self.proc_mounts
        return SandboxSpec(
            sandbox_id=row.id,
            layers=self.layers.paths(build),
            cpu_count=row.cpu_count,
            memory_mb=row.memory_mb,
            pids_limit=self.settings.pids_limit,
            args=argv,
            env=env,
            mounts=mounts,
            hostname="e2b",
            disk_mb=row.disk_mb,
        )

    def warm_row(self, sandbox_id: str, build: Build) -> Sandbox:
        """A never-stored row for an identity-less sandbox: the build's boot token, no create-time env vars."""
        return Sandbox(
            id=sandbox_id, env_vars={}, envd_access_token=self.tokens.boot_token(build), cpu_count=build.cpu_count,
            memory_mb=build.memory_mb, disk_mb=build.disk_mb,
        )

    def warm_spec(self, sandbox_id: str, build: Build) -> SandboxSpec:
        return self.spec(self.warm_row(sandbox_id, build), build)

    async def start_command(self, row: Sandbox, build: Build, ip: str) -> None:
        """Run the template's startCmd and wait for its readyCmd: at build time before the
        post-ready snapshot, and at create for builds without one (``ready_snapshots``)."""
        await self.envd.start_command(
            ip, row.envd_access_token, user=build.default_user or DEFAULT_USER,
            workdir=build.default_workdir or DEFAULT_WORKDIR, env={**(build.env_vars or {}), **(row.env_vars or {})},
            bash=has_bash(self.layers.paths(build)), start_cmd=build.start_cmd, ready_cmd=build.ready_cmd)

    async def prepare(self, handle: SandboxHandle, build: Build) -> None:
        """Start command first, then envd's warm-up: what an identity-less sandbox needs before a claim."""
        if build.start_cmd or build.ready_cmd:
            await self.start_command(self.warm_row(handle.sandbox_id, build), build, handle.ip)
        await self.envd.warm_up(handle.ip, self.tokens.boot_token(build))

    async def reidentify(self, row: Sandbox, build: Build, ip: str) -> None:
        """Give a rebooted sandbox (filesystem-only resume) its identity again: envd started
        from the container's config, which for a sandbox claimed from the warm pool holds the
        pool's boot token and none of the create's env vars."""
        init = envd_init(row, build)
        try:
            await self.envd.init(ip, row.envd_access_token, init)
        except EnvdInitError as exc:
            if exc.status != 401:
                raise
            await self.envd.init(ip, self.tokens.boot_token(build), init)

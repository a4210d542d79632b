"""Sandboxes' egress policies: validated from the API's fields, enforced by the runtime.

Validation happens before any work (a bad rule is a 400, nothing started); enforcement is
re-applied after every resume, restore and server restart, since the runtime's rule table
is rebuilt then.
"""

from __future__ import annotations

from typing import Any

import structlog

from sandlot.orchestrator.errors import InvalidRequest
from sandlot.runtime.base import Runtime
from sandlot.runtime.dns_filter import host_resolvers
from sandlot.runtime.egress import EgressPolicy, PolicyError, parse_policy
from sandlot.settings import Settings

log = structlog.get_logger("sandlot.orchestrator")


class NetworkPolicies:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime

    def policy(self, allow_internet_access: bool | None, network: dict[str, Any] | None) -> EgressPolicy:
        """The validated policy; :class:`InvalidRequest` when invalid or unsupported by the runtime."""
        try:
            policy = parse_policy(allow_internet_access, network)
        except PolicyError as exc:
            raise InvalidRequest(str(exc)) from exc
        if not policy.is_open and not self.runtime.egress_rules:
            raise InvalidRequest("Egress rules are not supported by this sandbox runtime")
        upstreams = tuple(self.settings.dns_upstreams) or host_resolvers()
        return EgressPolicy(policy.allow, policy.deny, policy.domains, policy.dns_servers, upstreams)

    async def apply(self, ip: str, allow_internet_access: bool | None, network: dict[str, Any] | None) -> None:
        """Install the policy of the sandbox at ``ip`` (also after a resume or restore)."""
        policy = self.policy(allow_internet_access, network)
        if self.runtime.egress_rules:
            await self.runtime.set_egress(ip, policy)

    async def clear(self, ip: str | None) -> None:
        """Forget the policy of an address being released; never raises (teardown goes on)."""
        if not ip or not self.runtime.egress_rules:
            return
        try:
            await self.runtime.clear_egress(ip)
        except Exception:
            log.exception("could not clear network policy", ip=ip)

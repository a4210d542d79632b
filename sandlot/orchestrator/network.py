"""Sandboxes' egress policies: validated from the API's fields, enforced by the runtime.

Validation happens before any work (a bad rule is a 400, nothing started); enforcement is
re-applied after every resume, restore and server restart, since the runtime's rule table
is rebuilt then. A sandbox with ``network.rules`` or an ``egressProxy`` has its TCP steered
to the server's egress proxy (``sandlot/egress``), which this class owns: it reads the
sandbox's stored network configuration and the team's secrets at each new connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import select

from sandlot.egress.ca import EgressCA
from sandlot.egress.config import (ConfigError, check_identity_refs, needs_proxy, parse_iam, parse_proxy,
                                   parse_rules)
from sandlot.egress.destinations import Destinations
from sandlot.egress.identity import IdentityIssuer, Subject
from sandlot.egress.server import EgressContext, EgressProxy
from sandlot.orchestrator.errors import InvalidRequest
from sandlot.runtime.base import Runtime
from sandlot.runtime.dns_filter import host_resolvers
from sandlot.runtime.egress import EgressPolicy, PolicyError, parse_policy
from sandlot.settings import Settings
from sandlot.store import secrets as secret_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox

PROXIED_STATES = ("creating", "running", "resuming")
"""States whose sandbox may open connections through the egress proxy."""

log = structlog.get_logger("sandlot.orchestrator")


class NetworkPolicies:
    def __init__(self, settings: Settings, runtime: Runtime, db: Database | None = None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.db = db
        self.destinations = Destinations(settings.sandbox_subnet, tuple(settings.egress_allow_private))
        self.proxy: EgressProxy | None = None
        self.identity = IdentityIssuer(settings.data_dir, settings.effective_identity_issuer,
                                       settings.effective_trust_domain)
        """Signs the JWT-SVIDs of sandboxes' ``iam`` tokens (key made on first use)."""
        self.execution_of: Callable[[str], str | None] = lambda _sandbox_id: None
        """The sandbox's current execution id (the lifecycle events'), for the tokens' claims."""

    # --- the egress proxy -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the egress proxy (before any policy is applied: its ports go into the rules)."""
        if self.proxy is not None or self.db is None or not self.runtime.egress_rules:
            return
        bundle = self.settings.host_ca_bundle
        ca = EgressCA(self.settings.data_dir, bundle if self.settings.trust_host_ca else None)
        cafiles = [str(p) for p in self.settings.egress_upstream_ca_files]
        proxy = EgressProxy(ca, self.destinations, self._context, self._secret, cafiles,
                            str(bundle) if bundle.exists() else None, mint=self._mint)
        await proxy.start()
        self.proxy = proxy

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
            self.proxy = None

    def _context(self, ip: str) -> EgressContext | None:
        """The sandbox at ``ip`` as the proxy needs it, read now (``PUT /network`` applies to new
        connections); ``None`` for an address that is no proxied sandbox's."""
        if self.db is None:
            return None
        with self.db.session() as session:
            row = session.scalars(select(Sandbox).where(Sandbox.ip == ip, Sandbox.state.in_(PROXIED_STATES))).first()
        if row is None or not any(needs_proxy(row.network)):
            return None
        try:
            policy = self.policy(row.allow_internet_access, row.network)
            network = row.network or {}
            return EgressContext(row.id, row.team_id, policy, parse_rules(network.get("rules")),
                                 parse_proxy(network.get("egressProxy")), parse_iam(network.get("iam")),
                                 row.template_id)
        except (InvalidRequest, ConfigError):
            log.exception("stored network configuration no longer valid", sandbox_id=row.id)
            return None

    def _mint(self, ctx: EgressContext, audience: str) -> str:
        subject = Subject(ctx.team_id, ctx.sandbox_id, ctx.template_id, self.execution_of(ctx.sandbox_id))
        return self.identity.mint(subject, audience)

    def _secret(self, team_id: str, name: str) -> str | None:
        assert self.db is not None
        with self.db.session() as session:
            return secret_store.secret_value(session, team_id, name)

    def _check_proxied(self, network: dict[str, Any], check_identity: bool) -> tuple[int, int, int]:
        """Validate ``rules``, ``iam`` and ``egressProxy``: the proxy's ports for the nft redirects."""
        try:
            rules = parse_rules(network.get("rules"))
            tokens = parse_iam(network.get("iam"))
            if check_identity:
                if tokens and not self.settings.workload_identity:
                    raise ConfigError("iam (workload identity) is turned off on this Sandlot server "
                                      "(SANDLOT_WORKLOAD_IDENTITY=false)")
                check_identity_refs(rules, tokens)
            upstream = parse_proxy(network.get("egressProxy"))
        except ConfigError as exc:
            raise InvalidRequest(str(exc)) from exc
        if upstream is not None:
            try:
                ipaddress.IPv4Address(upstream.host)
            except ValueError:
                pass   # a host name is resolved and checked at every dial (fails closed)
            else:
                why = self.destinations.floor(upstream.host)
                if why is not None:
                    raise InvalidRequest(f"Invalid egress proxy config: {upstream.host} is {why}")
        intercept, tunnel = needs_proxy(network)
        if not (intercept or tunnel):
            return 0, 0, 0
        if not self.runtime.egress_rules or self.db is None:
            raise InvalidRequest("network.rules and network.egressProxy are not supported by this sandbox runtime")
        if self.proxy is None:   # validation before start (tests, CLI): the ports come at apply
            return (1, 1, 1 if tunnel else 0) if intercept else (0, 0, 1)
        http, https = (self.proxy.http_port, self.proxy.https_port) if intercept else (0, 0)
        return http, https, self.proxy.tunnel_port if tunnel else 0

    # --- policies ---------------------------------------------------------------------------

    def policy(self, allow_internet_access: bool | None, network: dict[str, Any] | None,
               check_identity: bool = False) -> EgressPolicy:
        """The validated policy; :class:`InvalidRequest` when invalid or unsupported by the runtime.
        ``check_identity``: rules may only name the ``iam`` tokens of ``network`` (create and
        ``PUT /network``; a fork keeps its source's rules without the tokens, whose placeholders
        the proxy then refuses)."""
        try:
            policy = parse_policy(allow_internet_access, network)
        except PolicyError as exc:
            raise InvalidRequest(str(exc)) from exc
        if not policy.is_open and not self.runtime.egress_rules:
            raise InvalidRequest("Egress rules are not supported by this sandbox runtime")
        http, https, tunnel = self._check_proxied(network or {}, check_identity)
        upstreams = tuple(self.settings.dns_upstreams) or host_resolvers()
        return EgressPolicy(policy.allow, policy.deny, policy.domains, policy.dns_servers, upstreams,
                            http_port=http, https_port=https, tunnel_port=tunnel)

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

"""One typed settings object, read from ``SANDLOT_*`` environment variables.

Every knob of the server lives here so an operator can find them in one
place and the rest of the code never reads ``os.environ`` directly.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

API_KEY_PATTERN = re.compile(r"^e2b_[0-9a-f]{40}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDLOT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: Path = Path("/var/lib/sandlot")
    database_url: str | None = None
    api_key: str | None = None
    """Bootstrap key: created for the default team at first start when set."""
    admin_token: str | None = None
    """Operator token (``SANDLOT_ADMIN_TOKEN``): signs in to the dashboard's operator page (and is
    what operator-only endpoints take in ``X-Admin-Token``); unset = no operator access."""

    metrics_listen: str | None = None
    """``HOST:PORT`` of a second, plain-HTTP listener serving only ``GET /metrics`` *without* the
    operator token (for a scraper on a private network; never bind it publicly). Unset = none."""
    log_format: str = "auto"
    """``json`` (one object a line), ``console``, or ``auto``: JSON unless stderr is a terminal."""

    domain: str | None = None
    """Sandbox domain for ``{port}-{id}.{domain}`` hosts; ``None`` = SDK default."""

    tls: bool | None = None
    """Serve HTTPS; ``None`` = on when ``domain`` is set."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Operator's certificate (for ``domain`` and ``*.domain``) and key; generated from a local CA if unset."""

    dns_upstreams: list[str] = []
    """Resolvers for sandboxes with domain allow-lists (JSON list); empty = the host's resolv.conf."""
    egress_allow_private: list[str] = []
    """IPv4 CIDRs in private/special ranges that sandboxes may reach (JSON list: a LAN registry,
    a proxy); everything else in them is closed, whatever a sandbox's own ``allowOut`` says."""
    egress_upstream_ca_files: list[Path] = []
    """PEM CA files the egress proxy trusts for upstream HTTPS besides ``host_ca_bundle`` (JSON
    list: an internal CA of the hosts rules send secrets to)."""
    workload_identity: bool = True
    """E2B's ``iam`` (team flag there, server-wide here): sandboxes may define JWT-SVID tokens the
    egress proxy mints; off = a create with ``iam`` tokens answers 400."""
    identity_issuer: str | None = None
    """``iss`` of the JWT-SVIDs: the public base URL of this API, where audiences fetch
    ``/.well-known/openid-configuration``; unset = ``https://api.<domain>`` (or
    ``http://<host>:<port>`` without a domain)."""
    identity_trust_domain: str | None = None
    """SPIFFE trust domain of the tokens' ``sub``; unset = ``domain`` (or ``sandlot.local``)."""

    default_timeout_s: int = 300
    max_lifetime_s: int = 24 * 3600
    default_cpu_count: int = 2
    default_memory_mb: int = 512
    default_disk_mb: int = 10 * 1024
    max_cpu_count: int = 8
    max_memory_mb: int = 16 * 1024
    pids_limit: int = 4096

    trust_host_ca: bool = True
    """Bind the host's CA bundle into sandboxes (TLS-intercepting proxies)."""
    host_ca_bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt")

    no_new_privileges: bool = False
    """Off by default: E2B's contract includes passwordless sudo for ``user``."""
    seccomp: bool = True
    lxcfs: bool = True
    userns: bool = True
    """Sandboxes run in a user namespace: their root is ``userns_range``'s base on the host
    (docs/security/userns.md). Off: sandbox root is host root."""
    userns_range: str = "1000000000:65536"
    """``BASE:SIZE`` host ids that sandbox ids 0..SIZE-1 map to (SIZE >= 65536), one range per server."""
    """Sandboxes see their own memory, CPUs and uptime in /proc (``runtime/lxcfs.py``)."""
    """Sandboxes get ``runtime/seccomp.py``'s filter (no user namespaces, io_uring, BPF, …)."""

    paused_ttl_s: int = 0
    """Paused sandboxes older than this are deleted with their checkpoint (0 = kept until killed)."""
    hot_pause_s: int = 0
    """A memory pause first only freezes the sandbox (a "hot" pause: milliseconds both ways, its
    memory stays in RAM); after this many seconds paused it is checkpointed with CRIU as before
    ("cold"). 0 (the default for now) = every pause is a CRIU checkpoint at once. Always cold under ``sandlot node``
    (another node must be able to resume it). A host crash or reboot loses hot-paused sandboxes
    (a server restart does not): ``orchestrator/cooling.py``."""
    hot_pause_min_available_mb: int = 2048
    """While the host's ``MemAvailable`` (``/proc/meminfo``) is below this, hot pauses are cooled
    into CRIU checkpoints early, oldest first, to give their memory back."""

    network_pool_size: int = 4
    warm_pool_size: int = 2
    """Sandboxes kept booted per recently used template, so create skips envd's start-up (0 = off)."""
    sandbox_subnet: str = "10.213.0.0/16"
    envd_port: int = 49983
    envd_start_timeout_s: float = 20.0

    criu_path: str = "/usr/local/sbin/criu"
    """CRIU 4.2.x (scripts/install-criu.sh); checked with `criu check` at start-up."""
    lxcfs_path: Path | None = None
    """Where lxcfs is mounted (default ``<data dir>/lxcfs``, shared by the servers of a data dir)."""
    disk_min_free_mb: int = 2048
    """Below this much free space in the data dir, new sandboxes, snapshots and builds get 507
    (sandbox disks are sparse, so the disk is overcommitted: ``orchestrator/disk_guard.py``)."""
    sandbox_log_max_mb: int = 4
    """Host-side cap of a sandbox's init output (``envd.log``, rotated once to ``envd.log.1``)."""
    checkpoint_min_free_mb: int = 64
    """Pause/snapshot refuse (507) when the data dir has less free space than memory + this."""

    # --- template builds ---
    build_max_concurrent: int = 2
    build_min_memory_mb: int = 1024
    build_disk_mb: int = 20 * 1024
    """Disk of a build sandbox (a sparse image, like ``diskSizeMB``): what one build step may write."""
    """Build sandboxes get at least this much memory (pip/apt need more than a small template)."""
    build_step_timeout_s: float = 1800.0
    build_ready_timeout_s: float = 120.0
    """How long a template's readyCmd may take to exit 0 (at build and at sandbox create)."""
    build_max_layers: int = 40
    """Deeper layer stacks are flattened into one layer (overlay mount options are limited to a page)."""
    code_interpreter_template: bool = True
    """Build the public ``code-interpreter-v1`` template at start-up when it has no ready build."""
    mcp_gateway_template: bool = True
    """Build the public ``mcp-gateway`` template (``Sandbox.create(mcp=...)``) at start-up likewise."""

    # --- supply chain (docs/security/supply-chain.md) ---
    upload_max_bytes: int = 1 << 30
    """Largest COPY archive one upload may send (413 above)."""
    registry_allow_private: list[str] = []
    """Registries on loopback/private/link-local addresses tenants may pull from (JSON list of
    ``host``, ``host:port`` or CIDRs); they are spoken to over plain HTTP. Default: none."""

    # --- per-team quotas (sandlot/quotas.py); 0 = unlimited ---
    quota_concurrent_sandboxes: int = 20
    """Sandboxes a team may have running at once (E2B's default); paused ones and the warm pool don't count."""
    quota_snapshots: int = 100
    """Snapshots a team may keep."""
    quota_concurrent_builds: int = 4
    """Template/image builds of one team running at once (the server runs ``build_max_concurrent`` in total)."""
    quota_upload_bytes: int = 10 * 1024**3
    """Bytes of uploaded build files (COPY archives, Prime build contexts) a team may keep on this server."""

    # --- lifecycle events and webhooks (orchestrator/lifecycle_events.py, orchestrator/webhooks.py) ---
    events_retention_days: int = 7
    """Lifecycle events older than this are deleted (E2B's default retention)."""
    events_max_per_team: int = 10_000
    """A team's newest this many events are kept; older ones are deleted."""
    webhooks_per_team: int = 20
    """Webhooks a team may register (400 above)."""
    webhook_allow_private: list[str] = []
    """CIDRs (IPv4 or IPv6, JSON list) on loopback/private/link-local/host addresses that webhook
    deliveries may reach; everything else in them is refused. Default: none."""
    webhook_queue_size: int = 1000
    """Deliveries waiting (retries included); beyond it new deliveries are dropped and logged."""
    webhook_max_attempts: int = 4
    """Attempts per delivery (E2B: the first and up to 3 retries)."""
    webhook_retry_base_s: float = 10.0
    """Wait before the first retry; each further retry waits twice as long."""
    webhook_timeout_s: float = 10.0
    """One delivery attempt's connect + response time."""

    # --- volumes (orchestrator/volumes.py) ---
    volume_size_mb: int = 10 * 1024
    """Size of a new volume (a sparse ext4 image: host space only for what is kept); writes past it
    fail with ENOSPC in sandboxes and 507 through the content API."""
    volumes_per_team: int = 100
    """Volumes a team may have (400 above; 0 = no limit)."""
    volume_token_ttl_s: int = 24 * 3600
    """Lifetime of the volume tokens create and ``GET /volumes/{id}`` hand out."""
    volume_idle_unmount_s: float = 10.0
    """A volume only the content API used is unmounted on the host this long after its last call."""

    runtime_state_dir: Path = Path("/run/sandlot")
    instance: str = "sandlot"
    """Prefix of host resources (nft table, netns, veths) so two servers never collide."""

    # --- the node registry (orchestrator/nodes.py, GET /nodes; docs/scale-out.md) ---
    node_id: str | None = None
    """This server's id in the registry; default: the host name (plus ``-INSTANCE`` if not the default)."""
    node_heartbeat_s: float = 10.0
    """How often the server refreshes its node row; 3 missed beats = reported ``unavailable``."""

    # --- scale-out tiers (docs/scale-out.md): ``sandlot api`` routes, ``sandlot node`` runs sandboxes ---
    role: str = "serve"
    """``serve`` (single box, the default), ``api`` (stateless router) or ``node`` (one host's agent); set by the command."""
    node_token: str | None = None
    """Shared secret between the tiers: API instances send it as ``X-Sandlot-Node-Token``, nodes require it."""
    node_address: str | None = None
    """``host:port`` at which API instances reach this node (default: ``host:port``)."""
    blob_url: str | None = None
    """Content-addressed blob store: ``file:///dir`` or ``s3://bucket/prefix?endpoint=URL`` (default ``<data>/blobs``)."""
    images_dir: Path | None = None
    """Where the envd runtime and the ``base`` rootfs are built (default: the data dir): the install, not state."""

    failpoints: str = ""
    """Test-only fault injection, comma separated (``create-after-runtime``, ``pause-fail``, ``ready-snapshot-fail``)."""

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str) -> str:
        if value not in ("serve", "api", "node"):
            raise ValueError("role must be serve, api or node")
        return value

    @field_validator("egress_allow_private")
    @classmethod
    def _check_egress_allow_private(cls, value: list[str]) -> list[str]:
        import ipaddress

        out = []
        for entry in value:
            try:
                net = ipaddress.IPv4Network(entry, strict=False)
            except ValueError:
                raise ValueError(f"SANDLOT_EGRESS_ALLOW_PRIVATE: {entry!r} is not an IPv4 address or CIDR") from None
            out.append(str(net))
        return out

    @field_validator("webhook_allow_private")
    @classmethod
    def _check_webhook_allow_private(cls, value: list[str]) -> list[str]:
        import ipaddress

        out = []
        for entry in value:
            try:
                out.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(f"SANDLOT_WEBHOOK_ALLOW_PRIVATE: {entry!r} is not an IP address or CIDR") from None
        return out

    @field_validator("userns_range")
    @classmethod
    def _check_userns_range(cls, value: str) -> str:
        from sandlot.runtime.idmap import IdRange

        IdRange.parse(value)   # raises a ValueError naming the setting
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError("SANDLOT_METRICS_LISTEN must be HOST:PORT, e.g. 127.0.0.1:9464")
        return value

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in ("auto", "json", "console"):
            raise ValueError("SANDLOT_LOG_FORMAT must be auto, json or console")
        return value

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9]{0,7}$", value):
            raise ValueError("SANDLOT_INSTANCE must be 1-8 lowercase letters/digits starting with a letter")
        return value

    def failpoint(self, name: str) -> bool:
        return name in {p.strip() for p in self.failpoints.split(",") if p.strip()}

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: str | None) -> str | None:
        if value is not None and not API_KEY_PATTERN.match(value):
            raise ValueError("SANDLOT_API_KEY must be 'e2b_' followed by 40 lowercase hex characters")
        return value

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sandlot.db'}"

    @property
    def effective_blob_url(self) -> str:
        return self.blob_url or f"file://{self.data_dir / 'blobs'}"

    @property
    def effective_node_address(self) -> str:
        return self.node_address or f"{self.host}:{self.port}"

    @property
    def effective_images_dir(self) -> Path:
        return self.images_dir or self.data_dir

    @property
    def effective_identity_issuer(self) -> str:
        if self.identity_issuer:
            return self.identity_issuer.rstrip("/")
        if self.domain:
            return f"https://api.{self.domain}"
        return f"http://{self.host}:{self.port}"

    @property
    def effective_trust_domain(self) -> str:
        return self.identity_trust_domain or self.domain or "sandlot.local"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

    @property
    def base_dir(self) -> Path:
        """The ``base`` rootfs recipes (``<images>/templates/base``; the data dir's unless ``SANDLOT_IMAGES_DIR``)."""
        return self.effective_images_dir / "templates" / "base"

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots" / self.instance

    @property
    def template_snapshots_dir(self) -> Path:
        """Post-ready memory snapshots of templates with a start command, one dir per build."""
        return self.templates_dir / "snapshots" / self.instance

    @property
    def volumes_dir(self) -> Path:
        """This instance's volume images, one dir per volume id (``runtime/volume_disk.py``)."""
        return self.data_dir / "volumes" / self.instance

    @property
    def runtime_dir(self) -> Path:
        """This instance's runc runtime: sandbox dirs, disks, paused images."""
        return self.data_dir / "runtime" / self.instance

    @property
    def lxcfs_dir(self) -> Path:
        """One lxcfs mount for every server sharing the data dir."""
        return self.lxcfs_path or self.data_dir / "lxcfs"

    @property
    def envd_runtime_dir(self) -> Path:
        return self.effective_images_dir / "envd" / "runtime"

    @property
    def tls_enabled(self) -> bool:
        return self.tls if self.tls is not None else self.domain is not None

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def api_key_file(self) -> Path:
        return self.data_dir / "api-key"

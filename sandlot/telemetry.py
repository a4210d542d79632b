"""The server's Prometheus instruments, fed by the orchestrator's hooks, one registry per server.

Counters and histograms of things that *happen* live here, filled by listeners the app wires
once (``sandlot/app.py``): :meth:`Telemetry.on_transition` on ``Lifecycle.transitions``
(creates, kills, pause/resume durations from the state machine's own moves),
:meth:`Telemetry.on_operation` on ``Lifecycle.operations`` (snapshot durations),
:meth:`Telemetry.on_build` on ``TemplateBuilder.finished`` and
:meth:`Telemetry.observe_request` from the API's request middleware (status codes by route
template). Things that *are* (sandboxes by state, builds by status, warm pools, capacity,
front-door traffic) are read at scrape time by the collector in ``sandlot/api/prometheus.py``,
so ``/metrics`` and the API never disagree. A registry per server, not the process-wide
default one: in-process tests run several servers in one process.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

from sandlot.orchestrator.lifecycle import CREATING, GONE, PAUSED, PAUSING, RESUMING, RUNNING
from sandlot.store.models import Sandbox

OPERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Label values a request's method may take (any other is ``other``: clients choose methods)."""


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.creates = Counter("sandlot_sandbox_creates", "Sandboxes started (create, snapshot start, fork)",
                               registry=r)
        self.create_failures = Counter("sandlot_sandbox_create_failures", "Sandbox starts that failed", registry=r)
        self.create_seconds = Histogram("sandlot_sandbox_create_duration_seconds",
                                        "From admission (row written) to running", buckets=OPERATION_BUCKETS,
                                        registry=r)
        self.kills = Counter("sandlot_sandbox_kills", "Sandboxes removed (killed, expired, died, lost)", registry=r)
        self.pause_seconds = Histogram("sandlot_sandbox_pause_duration_seconds", "Pauses (checkpoint to disk)",
                                       ["outcome"], buckets=OPERATION_BUCKETS, registry=r)
        self.resume_seconds = Histogram("sandlot_sandbox_resume_duration_seconds", "Resumes (restore to running)",
                                        ["outcome"], buckets=OPERATION_BUCKETS, registry=r)
        self.snapshot_seconds = Histogram("sandlot_sandbox_snapshot_duration_seconds",
                                          "Snapshots and fork images of running sandboxes", ["outcome"],
                                          buckets=OPERATION_BUCKETS, registry=r)
        self.build_seconds = Histogram("sandlot_template_build_duration_seconds", "Template builds, queue included",
                                       ["outcome"], buckets=BUILD_BUCKETS, registry=r)
        self.build_failures = Counter("sandlot_template_build_failures", "Template builds that ended in error",
                                      registry=r)
        self.requests = Counter("sandlot_http_requests", "API requests by method, route template and status",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("sandlot_http_request_duration_seconds", "API request latency",
                                         ["method", "route"], buckets=REQUEST_BUCKETS, registry=r)
        self._began: dict[str, float] = {}
        """Sandbox id → when its current create, pause or resume began."""

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        """The text exposition format (called in a worker thread: collectors read the store)."""
        return generate_latest(self.registry)

    # --- listeners (cheap: they run on the event loop) ---------------------------------------

    def on_transition(self, row: Sandbox, old: str, new: str) -> None:
        now = time.monotonic()
        if new in (CREATING, PAUSING, RESUMING):
            self._began[row.id] = now
            return
        began = self._began.pop(row.id, None)
        elapsed = now - began if began is not None else None
        if old == CREATING:
            if new == RUNNING:
                self.creates.inc()
                if elapsed is not None:
                    self.create_seconds.observe(elapsed)
            else:
                self.create_failures.inc()
        elif old == PAUSING and new in (PAUSED, RUNNING) and elapsed is not None:
            self.pause_seconds.labels("ok" if new == PAUSED else "failed").observe(elapsed)
        elif old == RESUMING and new in (RUNNING, PAUSED) and elapsed is not None:
            self.resume_seconds.labels("ok" if new == RUNNING else "failed").observe(elapsed)
        if new == GONE and old != CREATING:
            self.kills.inc()

    def on_operation(self, kind: str, seconds: float, ok: bool) -> None:
        if kind == "snapshot":
            self.snapshot_seconds.labels("ok" if ok else "failed").observe(seconds)

    def on_build(self, build_id: str, ok: bool, seconds: float) -> None:
        self.build_seconds.labels("ok" if ok else "failed").observe(seconds)
        if not ok:
            self.build_failures.inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

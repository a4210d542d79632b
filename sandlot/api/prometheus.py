"""``GET /metrics``: Prometheus text format for operators (``X-Admin-Token``, ``operator.py``).

Two kinds of series. Counters and histograms of events (creates, pauses, builds, API
requests) are ``sandlot/telemetry.py``'s instruments. Everything that *is* — sandboxes by
state, builds by status, warm-pool depth, committed resources, host capacity, front-door
traffic — is read at scrape time by :class:`ServerCollector` from the same sources the API
answers from (``operator.server_status`` and the front door's ``TrafficStats``), so a scrape
and ``GET /sandboxes`` agree. The exposition is rendered in a worker thread (the collector
reads the store). ``docs/operations.md`` lists every series; ``deploy/grafana/sandlot.json``
charts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sandlot.api.operator import require_operator, server_status
from sandlot.proxy.stats import TrafficStats
from sandlot.services import Services
from sandlot.telemetry import Telemetry

router = APIRouter()


class ServerCollector(Collector):
    """Scrape-time gauges and the front door's plain counters."""

    def __init__(self, services: Services, problems: Callable[[], list[str]], traffic: TrafficStats) -> None:
        self.services = services
        self.problems = problems
        self.traffic = traffic

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        status = server_status(self.services, self.problems)
        up = GaugeMetricFamily("sandlot_up", "1 when the server is serving and reports no problem "
                               "(0: starting or degraded, see GET /health)")
        up.add_metric([], 1.0 if status["status"] == "ok" else 0.0)
        yield up
        problems = GaugeMetricFamily("sandlot_health_problems", "Features unavailable right now (GET /health)")
        problems.add_metric([], float(len(status["problems"])))
        yield problems
        sandboxes = GaugeMetricFamily("sandlot_sandboxes", "Sandboxes in the store by state (warm-pool ones "
                                      "are not sandboxes until claimed)", labels=["state"])
        for state, count in status["sandboxes"].items():
            sandboxes.add_metric([state], float(count))
        yield sandboxes
        committed = status["committed"]
        vcpus = GaugeMetricFamily("sandlot_sandboxes_committed_vcpus", "vCPUs of sandboxes with processes")
        vcpus.add_metric([], float(committed["vcpus"]))
        yield vcpus
        memory = GaugeMetricFamily("sandlot_sandboxes_committed_memory_bytes",
                                   "Memory limits of sandboxes with processes")
        memory.add_metric([], float(committed["memoryMB"]) * 2**20)
        yield memory
        builds = GaugeMetricFamily("sandlot_template_builds", "Template builds in the store by status",
                                   labels=["status"])
        for name, count in status["builds"].items():
            builds.add_metric([name], float(count))
        yield builds
        ready = GaugeMetricFamily("sandlot_warm_pool_ready", "Booted, unclaimed sandboxes per template kept warm",
                                  labels=["template_id"])
        booting = GaugeMetricFamily("sandlot_warm_pool_booting", "Warm-pool sandboxes booting per template",
                                    labels=["template_id"])
        for pool in status["warmPools"]:
            ready.add_metric([pool["templateID"]], float(pool["ready"]))
            booting.add_metric([pool["templateID"]], float(pool["booting"]))
        yield ready
        yield booting
        target = GaugeMetricFamily("sandlot_warm_pool_target", "Sandboxes kept warm per template (setting)")
        target.add_metric([], float(status["warmPoolSize"]))
        yield target
        yield from self._capacity(status["capacity"])
        yield from self._traffic()

    @staticmethod
    def _capacity(cap: dict[str, object]) -> Iterator[GaugeMetricFamily]:
        node = str(cap["node"])

        def gauge(name: str, doc: str, kind_values: dict[str, object]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["node", "kind"] if len(kind_values) > 1 else ["node"])
            for kind, value in kind_values.items():
                family.add_metric([node, kind] if len(kind_values) > 1 else [node], float(value))  # type: ignore[arg-type]
            return family

        yield gauge("sandlot_node_cpus", "CPUs of this host", {"": cap["cpus"]})
        yield gauge("sandlot_node_memory_bytes", "Memory of this host", {
            "total": cap["memoryTotalBytes"], "available": cap["memoryAvailableBytes"]})
        yield gauge("sandlot_node_disk_bytes", "The data dir's file system", {
            "total": cap["diskTotalBytes"], "free": cap["diskFreeBytes"]})
        yield gauge("sandlot_node_sandbox_slots", "Sandbox network slots (a /30 each) of SANDLOT_SANDBOX_SUBNET", {
            "total": cap["sandboxSlots"], "used": cap["sandboxSlotsUsed"]})

    def _traffic(self) -> Iterator[CounterMetricFamily]:
        t = self.traffic
        requests = CounterMetricFamily("sandlot_frontdoor_requests", "Requests to sandboxes through the front "
                                       "door, by path (relay: raw byte relay; asgi: slow path; websocket)",
                                       labels=["path"])
        requests.add_metric(["relay"], float(t.relayed))
        requests.add_metric(["asgi"], float(t.proxied))
        requests.add_metric(["websocket"], float(t.websockets))
        yield requests
        data = CounterMetricFamily("sandlot_frontdoor_bytes", "HTTP bytes relayed between clients and sandboxes "
                                   "(WebSocket frames not counted)", labels=["direction"])
        data.add_metric(["to_sandbox"], float(t.bytes_to_sandbox))
        data.add_metric(["from_sandbox"], float(t.bytes_from_sandbox))
        yield data


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    require_operator(request)
    telemetry: Telemetry = request.app.state.telemetry
    body = await asyncio.to_thread(telemetry.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

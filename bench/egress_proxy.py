"""Request latency through the egress proxy beside the direct path and a host-side floor.

Starts a test host in a network namespace (tests/e2e/egress_lab.py) and a server of its own,
then times ``curl`` (a new connection per request, as a tool does) to the test host's HTTP and
HTTPS from: the host itself (floor), a sandbox without rules (direct NAT path) and a sandbox
whose rule injects a secret header (through the proxy). Prints medians and p90 in ms.

    sudo .venv/bin/python bench/egress_proxy.py [--requests 50]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2b import Sandbox, Secret

from sandlot import ids
from tests.e2e.egress_lab import API_NAME, egress_lab
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

LOOP = ("for i in $(seq {n}); do curl -s -o /dev/null -w '%{{time_total}}\\n' {args} {url}; done")


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return f"median {statistics.median(ms):6.2f} ms   p90 {ms[int(len(ms) * 0.9) - 1]:6.2f} ms   (n={len(ms)})"


def _in_sandbox(sbx: Sandbox, url: str, n: int, args: str = "") -> list[float]:
    out = sbx.commands.run(LOOP.format(n=n, url=shlex.quote(url), args=args), timeout=600).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    n = parser.parse_args().requests
    with tempfile.TemporaryDirectory() as tmp, egress_lab(Path(tmp)) as lab:
        srv = Server(workdir=Path(tmp), api_key=ids.new_api_key(), instance=unique_instance("b"),
                     subnet=unique_subnet(),
                     extra_env={"SANDLOT_DNS_UPSTREAMS": json.dumps([lab.api_ip]),
                                "SANDLOT_EGRESS_ALLOW_PRIVATE": json.dumps([f"{lab.api_ip}/32", f"{lab.other_ip}/32"]),
                                "SANDLOT_EGRESS_UPSTREAM_CA_FILES": json.dumps([str(lab.ca_pem)])})
        srv.start()
        try:
            with sdk_pointed_at(srv):
                Secret.create("bench-key", "bench-" + ids.new_api_key())
                plain = Sandbox.create(timeout=600)
                ruled = Sandbox.create(timeout=600, network={"rules": {API_NAME: [{"transform": {"headers": {
                    "Authorization": "Bearer ${e2b.secrets.bench-key}"}}}]}})
                for sbx in (plain, ruled):
                    sbx.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
                    sbx.files.write("/tmp/lab-ca.pem", lab.ca_pem.read_text())
                resolve = f"--resolve {API_NAME}:80:{lab.api_ip} --resolve {API_NAME}:443:{lab.api_ip}"
                for scheme in ("http", "https"):
                    url = f"{scheme}://{API_NAME}/"
                    host = subprocess.run(["bash", "-c", LOOP.format(n=n, url=url, args=f"{resolve} --cacert {lab.ca_pem}")],
                                          capture_output=True, text=True, check=True).stdout
                    print(f"{scheme:5} host floor          {_stats([float(x) for x in host.split()])}")
                    print(f"{scheme:5} sandbox, no rules   "
                          f"{_stats(_in_sandbox(plain, url, n, '--cacert /tmp/lab-ca.pem'))}")
                    print(f"{scheme:5} sandbox, rule+proxy {_stats(_in_sandbox(ruled, url, n))}")
                plain.kill()
                ruled.kill()
        finally:
            srv.stop()


if __name__ == "__main__":
    main()

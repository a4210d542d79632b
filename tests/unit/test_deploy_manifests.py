"""deploy/ is checked offline: every Kubernetes manifest validates against the schemas of current
Kubernetes versions (``kubernetes-validate``, strict: unknown fields fail), keeps the security
stance its README states, and the systemd unit passes ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes release still maintained upstream at the time of writing, and the newest
the installed package knows."""


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCUMENTS = _documents()


def test_the_manifests_are_there() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS}
    assert {("Deployment", "sandlot-api"), ("Service", "sandlot-api"), ("DaemonSet", "sandlot-node"),
            ("StatefulSet", "sandlot-postgres"), ("Service", "sandlot-postgres"), ("Namespace", "sandlot")} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_manifest_validates(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The check is not vacuous: a typo'd field fails strict validation."""
    doc = next(doc for _, doc in DOCUMENTS if doc["kind"] == "DaemonSet")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"privileged": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_stance() -> None:
    """Only the node DaemonSet is privileged; secrets come from a Secret, never inline in a workload."""
    for name, doc in DOCUMENTS:
        if doc["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            privileged = (container.get("securityContext") or {}).get("privileged", False)
            assert privileged == (doc["kind"] == "DaemonSet"), name
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("TOKEN", "PASSWORD")):
                    assert "valueFrom" in env and "value" not in env, f"{name}: {env['name']} inline"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    repo = DEPLOY.parent
    unit = (DEPLOY / "systemd" / "sandlot.service").read_text()
    local = unit.replace("/opt/sandlot/.venv/bin/sandlot", str(repo / ".venv" / "bin" / "sandlot"))
    local = local.replace("WorkingDirectory=/opt/sandlot", f"WorkingDirectory={repo}")
    (tmp_path / "sandlot.service").write_text(local)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "sandlot.service")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sandlot.service" not in done.stderr, done.stderr   # warnings name the unit

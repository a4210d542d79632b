"""The camelCase ``Sandbox`` object prime-sandboxes 0.5 parses (required fields always present)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sandlot.api.prime.records import View, created_at


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def sandbox_json(v: View) -> dict[str, Any]:
    prime, box = v.prime, v.box
    if prime is not None:
        spec = prime.spec or {}
        data: dict[str, Any] = {
            "name": prime.name,
            "dockerImage": prime.docker_image,
            "startCommand": spec.get("startCommand"),
            "cpuCores": spec.get("cpuCores", 1.0),
            "memoryGB": spec.get("memoryGB", 1.0),
            "diskSizeGB": spec.get("diskSizeGB", 5.0),
            "networkAllowlist": spec.get("networkAllowlist"),
            "networkDenylist": spec.get("networkDenylist"),
            "timeoutMinutes": prime.timeout_minutes,
            "environmentVars": spec.get("environmentVars") or None,
            "labels": list(prime.labels or []),
            "updatedAt": iso(prime.updated_at),
            "startedAt": iso(prime.started_at),
            "terminatedAt": iso(prime.terminated_at),
            "pendingImageBuildId": prime.pending_image_build_id if v.status == "PENDING" else None,
            "region": spec.get("region"),
            "teamId": prime.team_id,
        }
    else:
        assert box is not None
        lifetime = (box.end_at - box.started_at).total_seconds()
        data = {
            "name": box.alias or box.id,
            "dockerImage": box.alias or box.template_id,
            "startCommand": None,
            "cpuCores": float(box.cpu_count),
            "memoryGB": box.memory_mb / 1024,
            "diskSizeGB": box.disk_mb / 1024,
            "networkAllowlist": None,
            "networkDenylist": None,
            "timeoutMinutes": max(1, math.ceil(lifetime / 60)),
            "environmentVars": None,
            "labels": [],
            "updatedAt": iso(box.started_at),
            "startedAt": iso(box.started_at),
            "terminatedAt": None,
            "pendingImageBuildId": None,
            "region": None,
            "teamId": box.team_id,
        }
    data.update(
        {
            "id": v.id,
            "diskMountPath": "/",
            "gpuCount": 0,
            "gpuType": None,
            "vm": True,
            "status": v.status,
            "idleTimeoutMinutes": None,
            "terminationReason": v.error_message if v.status in ("TERMINATED", "TIMEOUT") else None,
            "secrets": None,
            "advancedConfigs": None,
            "createdAt": iso(created_at(v)),
            # the start command's status is read on GET (sandboxes.py); the OOM killer's SIGKILL is 128 + 9
            "exitCode": 137 if v.error_type == "OOM_KILLED" else None,
            "errorType": v.error_type,
            "errorMessage": v.error_message,
            "userId": None,
        }
    )
    return data


def status_json(v: View) -> dict[str, Any]:
    """One ``statuses[]`` item of ``POST /sandbox/status:batchGet`` (snake_case there)."""
    return {
        "sandbox_id": v.id,
        "status": v.status,
        "error_type": v.error_type,
        "error_message": v.error_message,
        "pending_image_build_id": v.prime.pending_image_build_id if v.prime is not None and v.status == "PENDING" else None,
    }

"""Which sandbox and port a request is for, from headers or the Host name."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^[a-z0-9]+$")
_HOST = re.compile(r"^(?P<port>\d{1,5})-(?P<id>[a-z0-9]+)(?:-[a-z0-9]+)?\.")


@dataclass(frozen=True)
class Target:
    sandbox_id: str
    port: int


class BadTarget(ValueError):
    """The request names a sandbox, but not in a form we can route."""


def target_of(headers: dict[str, str], domain: str | None) -> Target | None:
    """``Target`` for sandbox traffic, ``None`` for control-plane traffic.

    Headers win (``E2b-Sandbox-Id`` + ``E2b-Sandbox-Port``, used with
    ``E2B_SANDBOX_URL``); otherwise a Host of ``{port}-{sandboxID}.{domain}``.
    """
    sandbox_id = headers.get("e2b-sandbox-id")
    if sandbox_id is not None:
        port_text = headers.get("e2b-sandbox-port", "")
        sandbox_id = sandbox_id.strip().split("-", 1)[0]
        if not _ID.match(sandbox_id):
            raise BadTarget(f"Invalid sandbox ID {sandbox_id!r}")
        if not port_text.strip().isdigit() or not 0 < int(port_text) < 65536:
            raise BadTarget(f"Invalid sandbox port {port_text!r}")
        return Target(sandbox_id, int(port_text))
    host = headers.get("host", "").split(":", 1)[0].lower()
    if domain is not None and not host.endswith("." + domain.lower()):
        return None
    match = _HOST.match(host)
    if match is None:
        return None
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise BadTarget(f"Invalid sandbox port {port}")
    return Target(match.group("id"), port)

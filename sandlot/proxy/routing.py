"""Which sandbox and port a request is for, from headers or the Host name.

Everything here is client-controlled, so it is parsed strictly (ASCII only, exact
shapes, no duplicates): the result only ever selects a sandbox id and a port number,
never a host. The upstream address is always the routed sandbox's own IP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ID_HEADER = "e2b-sandbox-id"
PORT_HEADER = "e2b-sandbox-port"

_ID = re.compile(r"[a-z0-9]{1,64}")
"""E2B sandbox ids (``^[a-z0-9]+$``); the SDK may append ``-{clientID}``, which is dropped."""
_CLIENT_SUFFIX = re.compile(r"[a-z0-9]{1,64}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
"""ASCII digits only: ``int()`` would also take ``" 80"``, ``"+80"``, ``"٨٠"`` or ``"0x50"``-like tricks."""
_HOST_LABEL = re.compile(r"(?P<port>[1-9][0-9]{0,4})-(?P<id>[a-z0-9]{1,64})(?:-[a-z0-9]{1,64})?")
_HOSTNAME = re.compile(r"[a-z0-9.-]{1,253}")


@dataclass(frozen=True)
class Target:
    sandbox_id: str
    port: int


class BadTarget(ValueError):
    """The request names a sandbox, but not in a form we can route."""


def parse_port(text: str) -> int:
    """A port from client text: 1-65535, plain ASCII digits, no sign, space or leading zero."""
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise BadTarget(f"Invalid sandbox port {text[:40]!r}")
    return int(text)


def parse_sandbox_id(text: str) -> str:
    """``{id}`` or ``{id}-{clientID}`` → ``{id}``; anything else is refused."""
    sandbox_id, dash, suffix = text.partition("-")
    if not _ID.fullmatch(sandbox_id) or (dash and not _CLIENT_SUFFIX.fullmatch(suffix)):
        raise BadTarget(f"Invalid sandbox ID {text[:80]!r}")
    return sandbox_id


def _single(headers: Iterable[tuple[bytes, bytes]], names: tuple[str, ...]) -> dict[str, str]:
    """The routing headers, each at most once (a duplicate could mean two different things
    to two parsers, so it is refused rather than resolved)."""
    found: dict[str, str] = {}
    wanted = {name.encode() for name in names}
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name not in wanted:
            continue
        key = name.decode("ascii")
        if key in found:
            raise BadTarget(f"Duplicate {key} header")
        try:
            found[key] = raw_value.decode("ascii")
        except UnicodeDecodeError:
            raise BadTarget(f"Invalid {key} header: not ASCII") from None
    return found


def target_of(headers: Iterable[tuple[bytes, bytes]], domain: str | None) -> Target | None:
    """``Target`` for sandbox traffic, ``None`` for control-plane traffic.

    ``headers`` are the raw ASGI header pairs. Headers win (``E2b-Sandbox-Id`` +
    ``E2b-Sandbox-Port``, used with ``E2B_SANDBOX_URL``); otherwise a Host of
    ``{port}-{sandboxID}.{domain}``.
    """
    found = _single(headers, (ID_HEADER, PORT_HEADER, "host"))
    if ID_HEADER in found or PORT_HEADER in found:
        if ID_HEADER not in found or PORT_HEADER not in found:
            raise BadTarget(f"Both {ID_HEADER} and {PORT_HEADER} headers are required")
        return Target(parse_sandbox_id(found[ID_HEADER]), parse_port(found[PORT_HEADER]))
    return _host_target(found.get("host", ""), domain)


def _host_target(host_header: str, domain: str | None) -> Target | None:
    """``{port}-{id}.{domain}[:port]`` → a target; any other name is control-plane traffic
    (the API never routes anywhere by Host, so odd names are harmless there)."""
    if not host_header.isascii():
        return None
    host, colon, port_text = host_header.partition(":")
    host = host.lower()
    if colon and not (port_text.isdigit() and len(port_text) <= 5):
        return None
    if not _HOSTNAME.fullmatch(host):
        return None
    label, dot, rest = host.partition(".")
    if not dot or not rest:
        return None
    if domain is not None and rest != domain.lower():
        return None
    match = _HOST_LABEL.fullmatch(label)
    if match is None:
        return None
    return Target(match.group("id"), parse_port(match.group("port")))

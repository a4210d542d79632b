"""E2B's ``network.rules`` and ``network.egressProxy``: validation, matching, what info shows.

Pure functions over the camelCase dicts kept in a sandbox's ``network`` column, so the API
(400 before any work) and the proxy (per connection) read the same rules the same way.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DOMAINS = 10
MAX_DOMAIN_CHARS = 128
MAX_HEADERS = 20
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 2048
MAX_SECRETS_PER_DOMAIN = 32
MAX_CREDENTIAL_BYTES = 255
MAX_CA_CERT_BYTES = 8192
MAX_SERVER_NAME = 253

SECRET_PREFIX = "${e2b.secrets."
IDENTITY_PREFIX = "${e2b.identity."
TOKEN_PREFIX = "${e2b.identity.tokens."
TEXT, SECRET, IDENTITY = "text", "secret", "identity"
MAX_IAM_TOKENS = 5
IAM_TOKEN_TYPES = ("JWT-SVID",)
MAX_AUDIENCE = 2048
_BAD_TOKEN_NAME = re.compile(r"[{}\x00-\x1f\x7f-\x9f]")
"""E2B's rule for a token name: a brace would end or open a placeholder, a control character
cannot be in a header."""
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")   # RFC 9110 token: a header name
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SECRET_NAME = re.compile(r"^[a-z0-9_-]{1,128}$")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
               "host", "content-length"}
"""Headers a rule may not set: they frame or route the request, not authenticate it."""


class ConfigError(ValueError):
    """An invalid rule or proxy; the message is shown to the client (never a secret's value)."""


@dataclass(frozen=True)
class HeaderValue:
    """A header value split into literal text, secret references (``${e2b.secrets.<name>}``) and
    workload identity tokens (``${e2b.identity.tokens.<name>}``)."""

    parts: tuple[tuple[str, str], ...]   # (TEXT / SECRET / IDENTITY, text or name)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(text for kind, text in self.parts if kind == SECRET)

    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(text for kind, text in self.parts if kind == IDENTITY)


@dataclass(frozen=True)
class Rule:
    host: str                                  # exact name or "*.suffix", lower case
    headers: tuple[tuple[str, HeaderValue], ...] = ()


@dataclass(frozen=True)
class UpstreamProxy:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_cert: str | None = field(default=None, repr=False)


def _domain_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_DOMAIN_CHARS:
        raise ConfigError(f"Invalid network rule host {key!r}: 1-{MAX_DOMAIN_CHARS} characters")
    name = key.strip().lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"Invalid network rule host {key!r}: expected a DNS name or '*.' followed by one")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    raise ConfigError(f"Invalid network rule host {key!r}: rules match DNS names, not IP addresses")


def parse_value(value: str) -> HeaderValue:
    """Split ``value`` on ``${e2b.secrets.<name>}`` references (INFRA's parser: the name is the
    text up to the next ``}``, trimmed and lower-cased; other ``${e2b.*}`` stay literal) and
    ``${e2b.identity.tokens.<name>}`` ones (the name verbatim, up to the next ``}``)."""
    parts: list[tuple[str, str]] = []
    rest = value
    while True:
        found = [(at, prefix) for prefix in (SECRET_PREFIX, IDENTITY_PREFIX) if (at := rest.find(prefix)) >= 0]
        if not found:
            break
        at, prefix = min(found)
        if rest[:at]:
            parts.append((TEXT, rest[:at]))
        if prefix == IDENTITY_PREFIX:
            if not rest.startswith(TOKEN_PREFIX, at):
                raise ConfigError("Invalid identity reference: only ${e2b.identity.tokens.<name>} is known")
            tail = rest[at + len(TOKEN_PREFIX):]
            end = tail.find("}")
            if end < 0:
                raise ConfigError("Invalid identity reference: unterminated '${e2b.identity.tokens.'")
            check_token_name(tail[:end])
            parts.append((IDENTITY, tail[:end]))
            rest = tail[end + 1:]
            continue
        tail = rest[at + len(SECRET_PREFIX):]
        end = tail.find("}")
        if end < 0:
            raise ConfigError("Invalid secret reference: unterminated '${e2b.secrets.'")
        raw = tail[:end]
        if "${" in raw:
            raise ConfigError("Invalid secret reference: nested '${' in a secret name")
        name = raw.strip().lower()
        if not _SECRET_NAME.match(name) or name.startswith("sec_"):
            raise ConfigError(f"Invalid secret reference {raw!r}: expected a secret name of letters, digits, '_', '-'")
        parts.append((SECRET, name))
        rest = tail[end + 1:]
    if rest:
        parts.append((TEXT, rest))
    return HeaderValue(tuple(parts))


def check_token_name(name: object) -> str:
    if not isinstance(name, str) or not name or _BAD_TOKEN_NAME.search(name) or len(name) > MAX_HEADER_NAME:
        raise ConfigError(f"Invalid iam token name {name!r}: 1-{MAX_HEADER_NAME} characters, no '{{', '}}' or "
                          "control characters")
    return name


def parse_iam(raw: object) -> dict[str, str]:
    """E2B's ``iam`` (``{"tokens": {name: {"audience", "tokenType"}}}``) as ``{name: audience}``;
    an absent or empty map is no workload identity."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("iam must be an object with a 'tokens' map")
    tokens = raw.get("tokens")
    if tokens is None:
        return {}
    if not isinstance(tokens, dict):
        raise ConfigError("iam.tokens must be an object of name -> token")
    if len(tokens) > MAX_IAM_TOKENS:
        raise ConfigError(f"iam.tokens has {len(tokens)} tokens; at most {MAX_IAM_TOKENS} are allowed")
    out: dict[str, str] = {}
    for name, token in tokens.items():
        check_token_name(name)
        if not isinstance(token, dict):
            raise ConfigError(f"iam.tokens[{name!r}] must be an object with 'audience' and 'tokenType'")
        audience, kind = token.get("audience"), token.get("tokenType")
        if not isinstance(audience, str) or not audience or len(audience) > MAX_AUDIENCE \
                or any(c in audience for c in "\r\n\0"):
            raise ConfigError(f"iam.tokens[{name!r}].audience must be a non-empty string of at most "
                              f"{MAX_AUDIENCE} characters")
        if kind not in IAM_TOKEN_TYPES:
            raise ConfigError(f"iam.tokens[{name!r}].tokenType {kind!r} is not supported; expected one of "
                              f"{', '.join(IAM_TOKEN_TYPES)}")
        out[name] = audience
    return out


def stored_iam(tokens: dict[str, str]) -> dict[str, Any] | None:
    """The ``iam`` kept with the sandbox's network configuration (audiences verbatim)."""
    if not tokens:
        return None
    return {"tokens": {name: {"audience": audience, "tokenType": "JWT-SVID"} for name, audience in tokens.items()}}


def check_identity_refs(rules: tuple[Rule, ...], tokens: dict[str, str]) -> None:
    """Every ``${e2b.identity.tokens.<name>}`` of ``rules`` names a token of the sandbox's ``iam``
    (the proxy never mints a token that was not registered at create)."""
    for rule in rules:
        for header, value in rule.headers:
            for name in value.identities:
                if name not in tokens:
                    raise ConfigError(f"network.rules[{rule.host!r}] header {header!r} references the iam token "
                                      f"{name!r}, which the sandbox's iam does not define (tokens are only "
                                      "defined at create)")


def parse_rules(raw: object) -> tuple[Rule, ...]:
    """The wire form ``{host: [{"transform": {"headers": {...}}}]}`` as rules; :class:`ConfigError`."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError("network.rules must be an object of host -> list of rules")
    if len(raw) > MAX_DOMAINS:
        raise ConfigError(f"network.rules names {len(raw)} hosts; at most {MAX_DOMAINS} are allowed")
    rules: dict[str, Rule] = {}
    for key, entries in raw.items():
        host = _domain_key(key)
        if host in rules:
            raise ConfigError(f"network.rules names {host!r} twice")
        if not isinstance(entries, list):
            raise ConfigError(f"network.rules[{key!r}] must be a list of rules")
        if len(entries) > 1:
            raise ConfigError(f"network.rules[{key!r}] has {len(entries)} rules; one rule per host is allowed")
        headers: list[tuple[str, HeaderValue]] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise ConfigError(f"network.rules[{key!r}] entries must be objects")
            transform = entry.get("transform") or {}
            if not isinstance(transform, dict):
                raise ConfigError(f"network.rules[{key!r}].transform must be an object")
            raw_headers = transform.get("headers") or {}
            if not isinstance(raw_headers, dict):
                raise ConfigError(f"network.rules[{key!r}].transform.headers must be an object")
            if len(raw_headers) > MAX_HEADERS:
                raise ConfigError(f"network.rules[{key!r}] sets {len(raw_headers)} headers; at most {MAX_HEADERS}")
            for name, value in raw_headers.items():
                if not isinstance(name, str) or not _TOKEN.match(name) or len(name) > MAX_HEADER_NAME:
                    raise ConfigError(f"Invalid header name {name!r} in network.rules[{key!r}]")
                if name.lower() in _HOP_BY_HOP:
                    raise ConfigError(f"network.rules[{key!r}] may not set the {name!r} header")
                if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
                    raise ConfigError(f"Header {name!r} of network.rules[{key!r}]: a string of at most "
                                      f"{MAX_HEADER_VALUE} characters is required")
                if any(c in value for c in "\r\n\0"):
                    raise ConfigError(f"Header {name!r} of network.rules[{key!r}] contains a control character")
                headers.append((name, parse_value(value)))
        distinct = {s for _, v in headers for s in v.secrets}
        if len(distinct) > MAX_SECRETS_PER_DOMAIN:
            raise ConfigError(f"network.rules[{key!r}] references {len(distinct)} secrets; at most "
                              f"{MAX_SECRETS_PER_DOMAIN} are allowed")
        rules[host] = Rule(host, tuple(headers))
    return tuple(rules.values())


def match(rules: tuple[Rule, ...], host: str) -> Rule | None:
    """E2B's matching: an exact name beats a wildcard, then the longest wildcard suffix wins;
    ``*.x.com`` matches subdomains at any depth, not ``x.com``; no merging."""
    name = host.lower().rstrip(".")
    best: Rule | None = None
    for rule in rules:
        if rule.host == name:
            return rule
        if rule.host.startswith("*.") and name.endswith(rule.host[1:]):
            if best is None or len(rule.host) > len(best.host):
                best = rule
    return best


def _host_port(address: object) -> tuple[str, int]:
    if not isinstance(address, str) or not address or len(address) > 260:
        raise ConfigError("Invalid egress proxy config: address must be 'host:port'")
    host, sep, port_text = address.strip().rpartition(":")
    host = host.strip("[]").lower()
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("Invalid egress proxy config: address must be 'host:port' with a port of 1-65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        if not all(_LABEL.match(label) for label in labels):
            raise ConfigError(f"Invalid egress proxy config: {host!r} is not a host name or IP address") from None
    else:
        if ip.version != 4:
            raise ConfigError("Invalid egress proxy config: only IPv4 proxy addresses are supported")
    return host, int(port_text)


def parse_proxy(raw: object) -> UpstreamProxy | None:
    """``egressProxy`` (SOCKS5, RFC 1929 credentials, optional TLS to the proxy)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("Invalid egress proxy config: an object is required")
    host, port = _host_port(raw.get("address"))
    username, password = raw.get("username"), raw.get("password")
    for label, item in (("username", username), ("password", password)):
        if item is not None and (not isinstance(item, str) or len(item.encode()) > MAX_CREDENTIAL_BYTES):
            raise ConfigError(f"Invalid egress proxy config: {label} must be a string of at most "
                              f"{MAX_CREDENTIAL_BYTES} bytes")
    if password is not None and username is None:
        raise ConfigError("Invalid egress proxy config: password requires username")
    tls, ca_cert = False, None
    raw_tls = raw.get("tls")
    if raw_tls is not None:
        if not isinstance(raw_tls, dict):
            raise ConfigError("Invalid egress proxy config: tls must be an object")
        tls = raw_tls.get("enabled") is not False
        if not tls and (raw_tls.get("serverName") or raw_tls.get("caCert")):
            raise ConfigError("Invalid egress proxy config: tls.enabled=false takes no other tls fields")
        server_name = raw_tls.get("serverName")
        if server_name is not None and (not isinstance(server_name, str) or len(server_name) > MAX_SERVER_NAME):
            raise ConfigError(f"Invalid egress proxy config: tls.serverName is at most {MAX_SERVER_NAME} characters")
        if server_name and server_name.lower() != host:
            raise ConfigError("Invalid egress proxy config: a tls.serverName other than the address's host is "
                              "not supported by this Sandlot server")
        ca_cert = raw_tls.get("caCert")
        if ca_cert is not None and (not isinstance(ca_cert, str) or len(ca_cert.encode()) > MAX_CA_CERT_BYTES
                                    or "-----BEGIN CERTIFICATE-----" not in ca_cert):
            raise ConfigError(f"Invalid egress proxy config: tls.caCert must be PEM of at most {MAX_CA_CERT_BYTES} bytes")
    return UpstreamProxy(host, port, username, password, tls, ca_cert)


def proxy_info(raw: dict[str, Any]) -> dict[str, Any]:
    """``egressProxy`` as info shows it: never ``password`` or ``caCert``."""
    info: dict[str, Any] = {"address": raw.get("address")}
    if raw.get("username") is not None:
        info["username"] = raw["username"]
    tls = raw.get("tls")
    if isinstance(tls, dict) and tls.get("enabled") is not False:
        info["tls"] = {"serverName": tls["serverName"]} if tls.get("serverName") else {}
    return info


def needs_proxy(network: dict[str, Any] | None) -> tuple[bool, bool]:
    """``(intercept, tunnel)``: HTTP(S) through the rule proxy, other TCP through the upstream proxy."""
    network = network or {}
    return bool(network.get("rules")), bool(network.get("egressProxy"))

"""E2B's rule shapes and matching (sandlot/egress/config.py) and the proxy's destination floor."""
from __future__ import annotations

import pytest

from sandlot.egress.config import ConfigError, match, parse_proxy, parse_rules, parse_value, proxy_info
from sandlot.egress.destinations import Destinations
from sandlot.runtime.egress import EgressPolicy


def _rule(headers: dict[str, str]) -> list[dict[str, object]]:
    return [{"transform": {"headers": headers}}]


def test_matching_prefers_exact_then_longest_wildcard_and_never_the_apex() -> None:
    rules = parse_rules({"api.x.com": _rule({"A": "exact"}), "*.x.com": _rule({"A": "short"}),
                         "*.deep.x.com": _rule({"A": "long"})})
    assert match(rules, "API.X.com.").host == "api.x.com"   # type: ignore[union-attr]
    assert match(rules, "a.b.deep.x.com").host == "*.deep.x.com"   # type: ignore[union-attr]
    assert match(rules, "other.x.com").host == "*.x.com"   # type: ignore[union-attr]
    assert match(rules, "x.com") is None and match(rules, "evilx.com") is None


def test_secret_placeholders_are_parsed_like_infra() -> None:
    value = parse_value("Bearer ${e2b.secrets. My-Key } and ${e2b.other.x}")
    assert value.parts == (("text", "Bearer "), ("secret", "my-key"), ("text", " and ${e2b.other.x}"))
    for bad in ("${e2b.secrets.", "${e2b.secrets.}", "${e2b.secrets.sec_abc}", "${e2b.secrets.a${b}",
                "${e2b.secrets.a b}", "${e2b.identity.tokens.}", "${e2b.identity.other}",
                "${e2b.identity.tokens.a{b}", "${e2b.identity.tokens.aws"):
        with pytest.raises(ConfigError):
            parse_value(bad)


@pytest.mark.parametrize("rules", [
    {"*": _rule({})}, {"1.2.3.4": _rule({})}, {"a.test": _rule({}) * 2}, {"a.test": _rule({"Host": "x"})},
    {"a.test": _rule({"Bad Name": "x"})}, {"a.test": _rule({"A": "x\r\nB: y"})},
    {"a.test": _rule({f"H{i}": "v" for i in range(21)})}, {f"h{i}.test": _rule({}) for i in range(11)},
    {"a.test": _rule({"A": "x" * 2049})}, "not a dict",
])
def test_invalid_rules_are_refused(rules: object) -> None:
    with pytest.raises(ConfigError):
        parse_rules(rules)


def test_proxy_config_and_what_info_shows() -> None:
    raw = {"address": "Proxy.Example.com:1080", "username": "u", "password": "p",
           "tls": {"enabled": True, "caCert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"}}
    proxy = parse_proxy(raw)
    assert proxy is not None and (proxy.host, proxy.port, proxy.tls) == ("proxy.example.com", 1080, True)
    assert proxy_info(raw) == {"address": "Proxy.Example.com:1080", "username": "u", "tls": {}}
    for bad in ({"address": "x"}, {"address": "x:0"}, {"address": "x:1", "password": "p"},
                {"address": "x:1", "username": "u" * 256}, {"address": "[::1]:1"},
                {"address": "x:1", "tls": {"enabled": False, "caCert": "c"}}):
        with pytest.raises(ConfigError):
            parse_proxy(bad)


def test_destination_floor_and_policy() -> None:
    dest = Destinations("10.213.0.0/16", ["10.9.0.0/24"])
    assert dest.floor("10.213.0.6") == "another sandbox"
    assert dest.floor("127.0.0.1") is not None and dest.floor("169.254.169.254") is not None
    assert dest.floor("10.9.0.5") is None and dest.floor("10.9.1.5") is not None
    assert dest.floor("93.184.215.14") is None
    policy = EgressPolicy(allow=("93.184.215.0/24",), deny=("0.0.0.0/0",), domains=("*.ok.test",))
    assert dest.allowed(policy, "93.184.215.14", None) is None
    assert dest.allowed(policy, "8.8.8.8", None) is not None
    assert dest.allowed(policy, "8.8.8.8", "a.ok.test") is None

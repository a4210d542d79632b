"""The front door's parsers of client bytes: routing headers, Host names, request targets,
and the headers a sandbox response may carry (the end-to-end attacks are in
``tests/security/test_frontdoor.py``)."""

from __future__ import annotations

import pytest

from sandlot.proxy.headers import from_sandbox, host_only_cookie, to_sandbox
from sandlot.proxy.routing import BadTarget, Target, target_of
from sandlot.proxy.upstream import BadRequestTarget, check_target, http_url, websocket_url

IP = "10.11.12.13"


def h(**pairs: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode("utf-8")) for k, v in pairs.items()]


@pytest.mark.parametrize("port", ["1@127.0.0.1:80", "+80", " 80", "80 ", "0x50", "٨٠", "８０", "0", "080",
                                  "65536", "99999999999", "-1", "80/../", "80\t", "", "1e3", "80.0"])
def test_hostile_port_headers_are_refused(port: str) -> None:
    with pytest.raises(BadTarget):
        target_of(h(e2b_sandbox_id="abc123", e2b_sandbox_port=port), None)


@pytest.mark.parametrize("sandbox_id", ["abc@127.0.0.1", "ABC", "abc/..", " abc", "abc def", "", "a" * 65,
                                        "abc-", "abc-x-y", "abc.def", "abcé"])
def test_hostile_sandbox_ids_are_refused(sandbox_id: str) -> None:
    with pytest.raises(BadTarget):
        target_of(h(e2b_sandbox_id=sandbox_id, e2b_sandbox_port="8000"), None)


def test_routing_headers_are_parsed_exactly() -> None:
    assert target_of(h(e2b_sandbox_id="abc123", e2b_sandbox_port="65535"), None) == Target("abc123", 65535)
    assert target_of(h(e2b_sandbox_id="abc123-client9", e2b_sandbox_port="1"), None) == Target("abc123", 1)


def test_duplicate_or_half_routing_headers_are_refused() -> None:
    twice = h(e2b_sandbox_id="abc", e2b_sandbox_port="80") + h(e2b_sandbox_port="49983")
    with pytest.raises(BadTarget, match="Duplicate"):
        target_of(twice, None)
    with pytest.raises(BadTarget, match="Duplicate"):
        target_of(h(e2b_sandbox_id="abc", e2b_sandbox_port="80") + h(E2B_SANDBOX_ID="def"), None)
    with pytest.raises(BadTarget):
        target_of(h(e2b_sandbox_port="80"), None)
    with pytest.raises(BadTarget):
        target_of(h(e2b_sandbox_id="abc"), None)


def test_host_routing_is_strict() -> None:
    assert target_of(h(host="8000-abc123.sbx.example.com"), "sbx.example.com") == Target("abc123", 8000)
    assert target_of(h(host="8000-abc123.sbx.example.com:443"), "sbx.example.com") == Target("abc123", 8000)
    for host in ["8000-abc123.evil.sbx.example.com", "8000-abc123.sbx.example.com.evil", "080-abc.sbx.example.com",
                 "8000-ABC@x.sbx.example.com", "api.sbx.example.com",
                 "8000-abc.sbx.example.com:80@x", "[::1]:3000", ""]:
        assert target_of(h(host=host), "sbx.example.com") is None, host
    for host in ["70000-abc.sbx.example.com", "８０００-abc.sbx.example.com"]:
        with pytest.raises(BadTarget):
            target_of(h(host=host), "sbx.example.com")
    with pytest.raises(BadTarget, match="Duplicate"):
        target_of(h(host="8000-abc.sbx.example.com") + h(host="api.sbx.example.com"), "sbx.example.com")


@pytest.mark.parametrize("target", [b"@127.0.0.1:8765/", b"http://127.0.0.1:8765/", b"127.0.0.1:8765", b"//127.0.0.1/x",
                                    b"*", b"/a#b", b"/a\\b", b"/a b", b"/a\x00", b"/\xc3\xa9", b"", b"x/y"])
def test_only_origin_form_targets(target: bytes) -> None:
    with pytest.raises(BadRequestTarget):
        check_target("GET", target, b"")


def test_origin_form_targets_build_the_sandbox_url_only() -> None:
    check_target("OPTIONS", b"*", b"")
    for path in [b"/", b"/@127.0.0.1:8765/", b"/a%2Fb/%E2%9C%93", b"/x:y@z"]:
        check_target("GET", path, b"q=1&r=%20")
        url = http_url(IP, 8765, path, b"q=1&r=%20")
        assert (url.host, url.port, url.userinfo) == (IP, 8765, b"")
        assert url.raw_path.endswith(b"?q=1&r=%20")
        assert websocket_url(IP, 8765, path, b"").startswith(f"ws://{IP}:8765/")
    assert http_url(IP, 80, b"/a%2Fb", b"").raw_path == b"/a%2Fb"


def test_set_cookie_loses_its_domain() -> None:
    assert host_only_cookie(b"a=b; Domain=sbx.example.com; Path=/; HttpOnly") == b"a=b; Path=/; HttpOnly"
    assert host_only_cookie(b"a=b;domain=.x;DOMAIN = y;Secure") == b"a=b;Secure"
    assert host_only_cookie(b"domain=1; Path=/") == b"domain=1; Path=/"


def test_sandbox_response_headers_stay_on_their_hop() -> None:
    out = from_sandbox([(b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"), (b"Keep-Alive", b"timeout=1"),
                        (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5"), (b"Alt-Svc", b'h2=":1"'),
                        (b"Set-Cookie", b"s=1; Domain=example.com"), (b"Content-Type", b"text/plain")])
    assert out == [(b"Set-Cookie", b"s=1"), (b"Content-Type", b"text/plain")]
    sent = to_sandbox([(b"host", b"x"), (b"connection", b"x-drop"), (b"x-drop", b"1"), (b"x-keep", b"2")], "localhost:80")
    assert sent == [(b"x-keep", b"2"), (b"host", b"localhost:80")]
    assert to_sandbox([(b"transfer-encoding", b"chunked"), (b"content-length", b"3")], None) == []

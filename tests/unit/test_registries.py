"""Image references a tenant may make the server pull, and the registry allow-list."""

from __future__ import annotations

import pytest

from sandlot.templates.registries import ReferenceError, RegistryPolicy, parse


@pytest.mark.parametrize(("image", "expected"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("docker://busybox:1", "docker.io/library/busybox:1"),
    ("team/app:2", "docker.io/team/app:2"),
    ("docker:24-dind", "docker.io/library/docker:24-dind"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    ("localhost/x", "localhost/x:latest"),
    ("quay.io/a/b@sha256:" + "a" * 64, "quay.io/a/b@sha256:" + "a" * 64),
    ("[::1]:5000/a", "[::1]:5000/a:latest"),
])
def test_registry_references_parse(image: str, expected: str) -> None:
    assert str(parse(image)) == expected


@pytest.mark.parametrize("image", [
    "oci:/tmp/layout:x", "oci-archive:/tmp/x.tar", "dir:/etc", "docker-archive:/x.tar", "docker-daemon:busybox:1",
    "containers-storage:busybox", "docker:///etc", "http://evil/x", "x@sha256:../../../../tmp/canary",
    "x@md5:" + "0" * 32, "x@sha256:" + "A" * 64, "Busybox", "a b", "127.0.0.1:99999/x", "", "x" * 600,
    "evil_host.com/x", "-host.com/x",
])
def test_other_transports_and_malformed_references_are_refused(image: str) -> None:
    with pytest.raises(ReferenceError):
        parse(image)


@pytest.mark.parametrize("image", ["127.0.0.1:5000/x", "localhost:5000/x", "127.0.0.2/x", "10.1.2.3/x", "192.168.0.1/x",
                                   "172.16.0.1/x", "169.254.169.254/x", "100.64.0.1/x", "0.0.0.0/x", "[::1]/x",
                                   "[fd00::1]/x", "[fe80::1]/x", "[::ffff:127.0.0.1]/x", "224.0.0.1/x"])
def test_non_public_registries_need_the_operator(image: str) -> None:
    with pytest.raises(ReferenceError, match="SANDLOT_REGISTRY_ALLOW_PRIVATE"):
        RegistryPolicy([]).check(parse(image))


def test_allow_list_by_host_port_and_cidr() -> None:
    policy = RegistryPolicy(["127.0.0.1", "10.0.0.0/8", "192.168.1.5:5000"])
    assert policy.check(parse("127.0.0.1:5000/x")) is True
    assert policy.check(parse("localhost:5000/x")) is True  # resolves to 127.0.0.1
    assert policy.check(parse("10.9.9.9/x")) is True
    assert policy.check(parse("192.168.1.5:5000/x")) is True
    for refused in ("127.0.0.2/x", "192.168.1.5:5001/x", "172.16.0.1/x"):
        with pytest.raises(ReferenceError):
            policy.check(parse(refused))
    assert policy.check(parse("8.8.8.8/x")) is False  # public: verified HTTPS


def test_bad_allow_list_entries_are_an_operator_error() -> None:
    with pytest.raises(ValueError, match="SANDLOT_REGISTRY_ALLOW_PRIVATE"):
        RegistryPolicy(["not a host"])

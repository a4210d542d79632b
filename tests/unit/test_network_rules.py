"""The nft ruleset: the private floor runs before a sandbox's own policy; sources are exact."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from sandlot.runtime.network import PRIVATE_DESTINATIONS, Network, sandbox_mac


def _network() -> Network:
    return Network("10.77.0.0/24", prefix="ut", table="ut", allow_private=("192.168.7.0/24", "10.1.2.3"),
                   resolvers=("10.255.255.53", "::1", "10.255.255.53"))


def test_private_floor_comes_before_the_sandbox_policy_and_the_allow_list_before_the_floor() -> None:
    rules = _network().ruleset(own=[])
    forward = rules[rules.index("chain forward"):]
    assert forward.index("jump floor") < forward.index("vmap @egress")
    floor = rules[rules.index("chain floor"):rules.index("chain forward")]
    assert floor.index("@lan_allow return") < floor.index("@resolvers") < floor.index("@private reject")
    assert f"add element inet ut private {{ {', '.join(PRIVATE_DESTINATIONS)} }}" in rules
    assert "add element inet ut lan_allow { 192.168.7.0/24, 10.1.2.3/32 }" in rules
    assert "add element inet ut resolvers { 10.255.255.53 }" in rules      # IPv4 only, once


def test_each_slot_accepts_its_own_ip_and_mac_only() -> None:
    net = _network()
    s = net.slot(3)
    assert sandbox_mac(s.sandbox_ip) == "02:53:0a:4d:00:0e"
    assert net.own_element(s) == '"utv3" . 02:53:0a:4d:00:0e . 10.77.0.14'
    rules = net.ruleset(own=[net.own_element(s)])
    assert "iifname . ether saddr . ip saddr != @own drop" in rules
    assert "iifname . arp saddr ether . arp saddr ip != @own drop" in rules
    assert 'add element arp ut own { "utv3" . 02:53:0a:4d:00:0e . 10.77.0.14 }' in rules


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check needs root")
def test_the_ruleset_is_valid_nft() -> None:
    net = _network()
    done = subprocess.run(["nft", "--check", "-f", "-"], input=net.ruleset(own=[net.own_element(net.slot(0))]),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

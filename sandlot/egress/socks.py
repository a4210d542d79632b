"""Dialing a destination through a sandbox's ``egressProxy`` (SOCKS5, RFC 1929 credentials,
optional TLS to the proxy), with python-socks; fails closed, never falls back to direct."""
from __future__ import annotations

import asyncio
import ssl

from python_socks import ProxyType
from python_socks.async_.asyncio.v2 import Proxy

from sandlot.egress.config import UpstreamProxy


def proxy_tls_context(upstream: UpstreamProxy, system_bundle: str | None) -> ssl.SSLContext:
    """TLS ≥ 1.2 to the proxy, always verified: its ``caCert`` replaces the system store."""
    if upstream.ca_cert:
        ctx = ssl.create_default_context(cadata=upstream.ca_cert)
    else:
        ctx = ssl.create_default_context(cafile=system_bundle)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def dial(upstream: UpstreamProxy, proxy_ip: str, host: str, port: int, timeout: float,
               system_bundle: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP stream to ``host:port`` through the proxy at ``proxy_ip`` (resolved and checked by
    the caller, pinned for this dial)."""
    # TLS verifies the proxy's certificate against its host name, so that dial takes the name
    # (python-socks resolves it again); a plain one is pinned to the address checked by the caller
    proxy = Proxy(ProxyType.SOCKS5, upstream.host if upstream.tls else proxy_ip, upstream.port, username=upstream.username,
                  password=upstream.password, rdns=True,
                  proxy_ssl=proxy_tls_context(upstream, system_bundle) if upstream.tls else None)
    stream = await proxy.connect(host, port, timeout=timeout)
    return stream.reader, stream.writer

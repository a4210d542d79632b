"""Run skopeo in a network namespace of its own, whose only way out is the pull proxy.

``python -m sandlot.templates.pull_netns SOCKET [--forward ADDR|PORT|HOST:PORT]... -- skopeo …`` is
started under ``unshare --net``: the namespace has nothing but ``lo``. This wrapper brings
``lo`` up, listens on ``127.0.0.1:<any>`` as skopeo's ``HTTPS_PROXY``/``HTTP_PROXY`` and
relays those connections to the pull proxy's unix socket (a file: it crosses network
namespaces). So Go's exceptions to proxying (``localhost``, loopback literals) and anything
else skopeo might dial directly reach only this empty namespace. A ``--forward`` is the
registry itself when the operator allow-listed a loopback/private one: the address is added
to ``lo`` here and each connection to it is a ``CONNECT`` through the proxy, which applies
the same policy as to everything else.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from functools import partial

CHUNK = 1 << 16
PR_SET_PDEATHSIG = 1
IP = shutil.which("ip", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "ip"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def _relay(socket_path: str, connect: str | None, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
    except OSError:
        writer.close()
        return
    try:
        if connect is not None:
            up_writer.write(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
            await up_writer.drain()
            head = await up_reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        up_writer.close()
        writer.close()


def _die_with_parent() -> None:
    """The server kills this wrapper on a pull's timeout: skopeo must not outlive it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


async def main(argv: list[str]) -> int:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    socket_path, forwards = options[0], []
    for i, option in enumerate(options):
        if option == "--forward":
            forwards.append(options[i + 1])
    # Blocking `ip` calls are fine here: this is the helper's own process, and nothing is served yet.
    subprocess.run([IP, "link", "set", "lo", "up"], check=True)  # noqa: ASYNC221
    servers = []
    proxy = await asyncio.start_server(lambda r, w: _relay(socket_path, None, r, w), "127.0.0.1", 0)
    servers.append(proxy)
    for forward in forwards:  # LISTEN_ADDRESS|PORT|CONNECT_TARGET
        listen, port, target = forward.split("|")
        address = ipaddress.ip_address(listen)
        try:
            if not address.is_loopback:
                subprocess.run([IP, "addr", "add", f"{address}/{address.max_prefixlen}", "dev", "lo"],  # noqa: ASYNC221
                               check=True)
            servers.append(await asyncio.start_server(partial(_relay, socket_path, target), str(address), int(port)))
        except OSError as exc:  # e.g. no IPv6 on lo: the other address still works
            print(f"pull_netns: cannot listen on {listen}:{port}: {exc}", file=sys.stderr)
    url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    env = dict(os.environ, HTTPS_PROXY=url, HTTP_PROXY=url, https_proxy=url, http_proxy=url)
    process = await asyncio.create_subprocess_exec(*command, env=env, stdin=subprocess.DEVNULL,
                                                   preexec_fn=_die_with_parent)
    code = await process.wait()
    for server in servers:
        server.close()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

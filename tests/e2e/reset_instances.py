"""``sandlot reset`` for many stopped test servers in one process (the session's final clean-up).

A ``sandlot reset`` process spends most of its time importing the server (~4 s of CPU); a
session starts ~45 servers, so resetting each in its own process cost minutes. This does, for
each instance in turn, exactly what ``sandlot reset --yes`` does (the same settings from that
server's environment, the same ``_reset``), importing once. Reads a JSON list of environments
on stdin; prints one JSON line per instance; exits non-zero when any reset failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys


def main() -> int:
    envs: list[dict[str, str]] = json.load(sys.stdin)
    from sandlot.app import build_services
    from sandlot.cli import _reset, _settings
    from sandlot.logging_setup import configure

    configure("warning")
    failed = 0
    for env in envs:
        os.environ.clear()
        os.environ.update(env)
        try:
            services = build_services(_settings())
            killed = asyncio.run(_reset(services))
            services.db.engine.dispose()
            print(json.dumps({"instance": env["SANDLOT_INSTANCE"], "killed": killed}), flush=True)
        except Exception as exc:  # reported: the caller falls back to `sandlot reset` for it
            failed += 1
            print(json.dumps({"instance": env["SANDLOT_INSTANCE"], "error": repr(exc)[-2000:]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

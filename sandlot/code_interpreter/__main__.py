"""``python -m sandlot.code_interpreter``: serve the code-interpreter API (the template's start command).

Settings come from ``SANDLOT_CI_*`` variables; the defaults are what a
``code-interpreter-v1`` sandbox needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from sandlot.code_interpreter.server import Config, create_app


def config_from_env() -> Config:
    defaults = Config()
    languages = os.environ.get("SANDLOT_CI_DEFAULT_LANGUAGES")
    return Config(
        envd_url=os.environ.get("SANDLOT_CI_ENVD_URL", defaults.envd_url),
        default_cwd=os.environ.get("SANDLOT_CI_CWD", defaults.default_cwd),
        runtime_dir=Path(os.environ.get("SANDLOT_CI_RUNTIME_DIR", str(defaults.runtime_dir))),
        default_languages=(tuple(x for x in languages.split(",") if x) if languages is not None
                           else defaults.default_languages),
    )


def main() -> None:
    uvicorn.run(
        create_app(config_from_env()),
        host=os.environ.get("SANDLOT_CI_HOST", "0.0.0.0"),
        port=int(os.environ.get("SANDLOT_CI_PORT", "49999")),
        http="h11",
        loop="asyncio",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=640,  # as E2B's server: SDK connections are reused across calls
    )


if __name__ == "__main__":
    main()

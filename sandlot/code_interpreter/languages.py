"""Language names the SDKs send, and the snippets that change a running kernel's env.

Kept apart from the kernels so it imports nothing from Jupyter.
"""

from __future__ import annotations

import json
import shlex

ALIASES = {"js": "javascript", "ts": "typescript"}
"""Names the SDKs send for a language (E2B's normalisation)."""
RUNS_ON = {"typescript": "javascript"}
"""Languages that run on another language's kernel."""


def normalize(language: str | None) -> str:
    name = (language or "python").strip().lower() or "python"
    return ALIASES.get(name, name)


def env_code(language: str, values: dict[str, str], removed: list[str]) -> str | None:
    """Code that sets/unsets environment variables inside a running kernel of ``language``,
    leaving no names behind in the user's namespace; ``None`` when we don't know how."""
    if language == "python":
        return (f"(lambda e: (e.update({json.dumps(values)}), [e.pop(k, None) for k in {json.dumps(removed)}]))"
                "(__import__('os').environ)")
    if language == "bash":
        parts = [f"export {k}={shlex.quote(v)}" for k, v in values.items() if k.isidentifier()]
        parts += [f"unset {k}" for k in removed if k.isidentifier()]
        return "; ".join(parts) or ":"
    return None

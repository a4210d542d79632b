"""Language names the SDKs send, the kernels they run on, and the snippets that change a
running kernel's env.

Kept apart from the kernels so it imports nothing from Jupyter.
"""

from __future__ import annotations

import json
import shlex

ALIASES = {"js": "javascript", "ts": "typescript"}
"""Names the SDKs send for a language (E2B's normalisation)."""
RUNS_ON = {"javascript": "typescript"}
"""Languages that run on a kernel of another language: JavaScript on Deno's (TypeScript)."""
IPC_KERNELS = {"python", "bash"}
"""Kernels (ipykernel-based) that speak ZeroMQ over ``ipc`` with abstract socket names. Deno's,
IRkernel and JJava (JeroMQ) only build ``tcp://ip:port`` addresses: they get loopback TCP."""


def normalize(language: str | None) -> str:
    name = (language or "python").strip().lower() or "python"
    return ALIASES.get(name, name)


def kernel_language(language: str) -> str:
    """The language of the kernel a (normalized) language runs on."""
    return RUNS_ON.get(language, language)


def _text(value: str) -> str:
    """A double-quoted literal JavaScript, R and Java all read back as ``value``."""
    return json.dumps(value)


def env_code(language: str, values: dict[str, str], removed: list[str]) -> str | None:
    """Code that sets/unsets environment variables inside a running kernel of ``language``
    (a kernel language), leaving no names behind in the user's namespace; ``None`` when we
    don't know how."""
    if language == "python":
        return (f"(lambda e: (e.update({json.dumps(values)}), [e.pop(k, None) for k in {json.dumps(removed)}]))"
                "(__import__('os').environ)")
    if language == "bash":
        parts = [f"export {k}={shlex.quote(v)}" for k, v in values.items() if k.isidentifier()]
        parts += [f"unset {k}" for k in removed if k.isidentifier()]
        return "; ".join(parts) or ":"
    if language == "typescript":  # Deno: process.env is a view of Deno.env
        sets = "".join(f"Deno.env.set({_text(k)}, {_text(v)});" for k, v in values.items() if k and "=" not in k)
        dels = "".join(f"Deno.env.delete({_text(k)});" for k in removed if k and "=" not in k)
        return f"{{ {sets}{dels} }}"
    if language == "r":
        parts = []
        if values:
            pairs = ", ".join(f"{_text(k)} = {_text(v)}" for k, v in values.items())
            parts.append(f"do.call(Sys.setenv, list({pairs}))")
        if removed:
            parts.append(f"Sys.unsetenv(c({', '.join(_text(k) for k in removed)}))")
        return f"invisible({{ {'; '.join(parts)} }})" if parts else "invisible(NULL)"
    if language == "java":
        # System.getenv() is read-only: its backing map is reached through java.util, which the
        # kernelspec opens; system properties are set as well, as E2B's server does
        puts = "".join(f"__m.put({_text(k)}, {_text(v)});" for k, v in values.items())
        puts += "".join(f"__m.remove({_text(k)});" for k in removed)
        props = "".join(f"System.setProperty({_text(k)}, {_text(v)});" for k, v in values.items() if k)
        props += "".join(f"System.clearProperty({_text(k)});" for k in removed if k)
        return ("{ try { java.util.Map<String, String> __e = System.getenv();"
                " java.lang.reflect.Field __f = __e.getClass().getDeclaredField(\"m\"); __f.setAccessible(true);"
                " @SuppressWarnings(\"unchecked\") java.util.Map<String, String> __m ="
                f" (java.util.Map<String, String>) __f.get(__e); {puts} }} catch (Exception __x) {{ }} {props} }}")
    return None

"""``fromImage``: pull an OCI/Docker image with skopeo and unpack it with umoci.

Both are Debian packages. umoci applies each layer in order and resolves the
``.wh.`` whiteouts (and opaque ``.wh..wh..opq`` markers) itself, so the result is
one plain rootfs directory, cached by manifest digest under ``<templates>/images``
(``sandlot template gc`` removes images no build or sandbox uses; a cache hit marks one
as used).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandlot.templates import gc
from sandlot.templates.steps import BuildConfig

SKOPEO = "/usr/bin/skopeo"
UMOCI = "/usr/bin/umoci"
PULL_TIMEOUT_S = 1800


class PullError(Exception):
    pass


@dataclass(frozen=True)
class Pulled:
    digest: str
    rootfs: Path
    config: BuildConfig


def normalize(image: str) -> str:
    """Docker's short names: ``busybox`` → ``docker.io/library/busybox:latest``."""
    name, digest = (image.split("@", 1) + [""])[:2]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def _is_loopback(ref: str) -> bool:
    host = ref.split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def credentials(registry: dict | None) -> str | None:
    """``user:password`` for skopeo from ``fromImageRegistry`` (general, GCP; AWS needs ECR)."""
    if not registry:
        return None
    kind = registry.get("type")
    if kind == "registry":
        return f"{registry.get('username', '')}:{registry.get('password', '')}"
    if kind == "gcp":  # Artifact/Container Registry accept the service account JSON as a password
        return f"_json_key:{registry.get('serviceAccountJson', '')}"
    if kind == "aws":
        raise PullError("AWS ECR credentials are accepted but cannot be used here: exchanging them for a registry "
                        "token needs the ECR API (api.ecr.<region>.amazonaws.com), which this server cannot reach")
    raise PullError(f"unknown fromImageRegistry type '{kind}'")


class ImageStore:
    def __init__(self, root: Path, staging: Path) -> None:
        self.root = root
        self.staging = staging

    async def pull(self, image: str, registry: dict | None, progress: Callable[[str], None]) -> Pulled:
        ref = normalize(image)
        args = ["--insecure-policy"]
        common, copy_args = [], []
        creds = credentials(registry)
        if creds:
            common += ["--creds", creds]
            copy_args += ["--src-creds", creds]
        if _is_loopback(ref):  # a local registry speaks plain HTTP
            common += ["--tls-verify=false"]
            copy_args += ["--src-tls-verify=false"]
        raw = await _run([SKOPEO, *args, "inspect", "--raw", *common, f"docker://{ref}"], f"inspect {ref}")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        manifest = json.loads(raw)
        if manifest.get("manifests"):  # an index: the digest of the amd64 manifest is what counts
            digest = next((m["digest"] for m in manifest["manifests"]
                           if m.get("platform", {}).get("architecture") in ("amd64", None)), digest)
        target = self.root / digest.replace(":", "-")
        if (target / "config.json").is_file() and gc.keep_alive(target, "images"):
            progress(f"Image {ref} already unpacked")
            return Pulled(digest, target / "rootfs", _config(json.loads((target / "config.json").read_text())))
        work = self.staging / f"img-{uuid.uuid4().hex}"
        work.mkdir(parents=True)
        try:
            progress(f"Pulling {ref}")
            await _run([SKOPEO, *args, "copy", *copy_args, f"docker://{ref}", f"oci:{work / 'oci'}:img"], f"copy {ref}")
            progress("Unpacking layers")
            (work / "out").mkdir()
            await _run([UMOCI, "raw", "unpack", "--image", f"{work / 'oci'}:img", str(work / "out" / "rootfs")],
                       "umoci unpack")
            image_config = _image_config(work / "oci")
            (work / "out" / "config.json").write_text(json.dumps(image_config))
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(work / "out", target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return Pulled(digest, target / "rootfs", _config(image_config))


def _image_config(layout: Path) -> dict:
    """The image's ``config`` (Env, User, WorkingDir) from an OCI layout with one image."""
    def blob(digest: str) -> dict:
        algo, hexd = digest.split(":", 1)
        return json.loads((layout / "blobs" / algo / hexd).read_text())

    index = json.loads((layout / "index.json").read_text())
    manifest = blob(index["manifests"][0]["digest"])
    return blob(manifest["config"]["digest"]).get("config") or {}


def _config(image_config: dict) -> BuildConfig:
    env = dict(item.split("=", 1) for item in image_config.get("Env") or [] if "=" in item)
    user = (image_config.get("User") or "root").split(":", 1)[0] or "root"
    return BuildConfig(env=env, user=user, workdir=image_config.get("WorkingDir") or "/")


async def _run(argv: list[str], what: str) -> bytes:
    if not Path(argv[0]).exists():
        raise PullError(f"{Path(argv[0]).name} is not installed (apt-get install skopeo umoci)")
    env = dict(os.environ)
    env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY", ""), "localhost,127.0.0.1,::1"]))
    env["no_proxy"] = env["NO_PROXY"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PULL_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise PullError(f"{what}: timed out") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise PullError(f"{what}: {message[-1] if message else f'exit code {proc.returncode}'}")
    return out

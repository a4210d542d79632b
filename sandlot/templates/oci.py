"""``fromImage``: pull an OCI/Docker image with skopeo and unpack it with umoci.

Both are Debian packages. umoci applies each layer in order and resolves the
``.wh.`` whiteouts (and opaque ``.wh..wh..opq`` markers) itself, so the result is
one plain rootfs directory, cached by manifest digest under ``<templates>/images``
(``sandlot template gc`` removes images no build or sandbox uses; a cache hit marks one
as used).

Everything a registry answers is hostile (docs/security/supply-chain.md): a digest must be
``sha256:`` + 64 hex before it names a path or a cache key; the manifest is fetched raw and
hashed here, then pulled *by that digest*, and every blob skopeo wrote is re-hashed and
must be the one the verified manifest names before umoci unpacks it. skopeo runs with an
environment of its own: no host credentials (only the ones the request supplied, in a
private auth file), no other transport than ``docker://``, registries public unless the
operator allow-listed them (``registries.py``), and every connection — redirects included —
through a proxy that applies the same rule (``pull_proxy.py``), from a network namespace
where nothing else is reachable (``pull_netns.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandlot.templates import gc, pull_proxy
from sandlot.templates.registries import DIGEST, Reference, ReferenceError, RegistryPolicy, parse
from sandlot.templates.steps import BuildConfig

SKOPEO = "/usr/bin/skopeo"
UNSHARE = "/usr/bin/unshare"
UMOCI = "/usr/bin/umoci"
PULL_TIMEOUT_S = 1800
MAX_MANIFEST_BYTES = 4 << 20
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
            "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "CONTAINERS_REGISTRIES_CONF")
"""The host environment skopeo gets: proxies and CAs, never ``HOME``/``XDG_RUNTIME_DIR``/
``DOCKER_CONFIG``/``REGISTRY_AUTH_FILE`` (where the host's registry credentials live)."""


class PullError(Exception):
    pass


@dataclass(frozen=True)
class Pulled:
    digest: str
    rootfs: Path
    config: BuildConfig


def credentials(registry: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(user, password)`` from ``fromImageRegistry`` (general, GCP; AWS needs ECR)."""
    if not registry:
        return None
    kind = registry.get("type")
    if kind == "registry":
        return str(registry.get("username") or ""), str(registry.get("password") or "")
    if kind == "gcp":  # Artifact/Container Registry accept the service account JSON as a password
        return "_json_key", str(registry.get("serviceAccountJson") or "")
    if kind == "aws":
        raise PullError("AWS ECR credentials are accepted but cannot be used here: exchanging them for a registry "
                        "token needs the ECR API (api.ecr.<region>.amazonaws.com), which this server cannot reach")
    raise PullError(f"unknown fromImageRegistry type '{kind}'")


def check_digest(value: object, what: str) -> str:
    if not isinstance(value, str) or not DIGEST.match(value):
        shown = repr(value)[:100]
        raise PullError(f"the registry's {what} has digest {shown}; only 'sha256:' + 64 lowercase hex is accepted")
    return value


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PullError(f"the registry's {what} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PullError(f"the registry's {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise PullError(f"the registry's {what} is not a JSON object")
    return doc


def _is_index(doc: dict[str, Any]) -> bool:
    return doc.get("mediaType") in INDEX_TYPES or "manifests" in doc


def _pick_platform(index: dict[str, Any]) -> str:
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise PullError("the registry's image index has no list of manifests")
    for entry in entries:
        platform = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
        if platform.get("architecture") in ("amd64", None) and platform.get("os") in ("linux", None):
            return check_digest(entry.get("digest"), "image index entry")
    raise PullError("the image has no linux/amd64 variant")


def _blobs(manifest: dict[str, Any]) -> tuple[str, list[str]]:
    """The config digest and layer digests a (verified) image manifest names, validated."""
    if manifest.get("schemaVersion") != 2 or not isinstance(manifest.get("config"), dict):
        raise PullError("the registry's manifest is not an OCI / Docker schema 2 image manifest")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise PullError("the registry's manifest has no list of layers")
    config = check_digest(manifest["config"].get("digest"), "image config")
    return config, [check_digest(layer.get("digest"), "layer") for layer in layers]


class ImageStore:
    def __init__(self, root: Path, staging: Path, allow_private: list[str] | None = None) -> None:
        self.root = root
        self.staging = staging
        self.policy = RegistryPolicy(allow_private or [])

    def check(self, image: str) -> tuple[Reference, bool]:
        """The parsed reference and whether it is an allow-listed private (plain HTTP) registry;
        ``PullError`` for any reference a tenant may not make this server pull."""
        try:
            ref = parse(image)
            return ref, self.policy.check(ref)
        except ReferenceError as exc:
            raise PullError(str(exc)) from None

    async def pull(self, image: str, registry: dict[str, Any] | None, progress: Callable[[str], None]) -> Pulled:
        ref, plain_http = await asyncio.to_thread(self.check, image)
        creds = credentials(registry)
        self.staging.mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix="skopeo-", dir=self.staging))
        try:
            async with contextlib.AsyncExitStack() as stack:
                skopeo = _Skopeo(home, ref, creds, plain_http)
                if _operator_proxy():
                    pass  # the operator's proxy decides where pulls may go
                elif plain_http and not _literal_or_localhost(ref.host):
                    # an allow-listed registry by DNS name: skopeo must resolve it, so no namespace
                    skopeo.via(await stack.enter_async_context(pull_proxy.running(self.policy)), self.policy.no_proxy)
                else:
                    sock = home / "proxy.sock"
                    skopeo.via(await stack.enter_async_context(pull_proxy.running(self.policy, sock)),
                               self.policy.no_proxy, netns=_netns_wrapper(sock, ref if plain_http else None))
                return await self._pull(ref, skopeo, progress)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    async def _pull(self, ref: Reference, skopeo: "_Skopeo", progress: Callable[[str], None]) -> Pulled:
        raw = await skopeo.inspect_raw(str(ref))
        top = _json(raw, "manifest")
        if ref.digest and _sha256(raw) != ref.digest:
            raise PullError(f"the registry answered a manifest whose digest is not {ref.digest}")
        if _is_index(top):
            digest = _pick_platform(top)
            raw = await skopeo.inspect_raw(ref.by_digest(digest))
            if _sha256(raw) != digest:
                raise PullError(f"the registry answered a manifest for {digest} whose content hashes to "
                                f"{_sha256(raw)}")
            manifest = _json(raw, "manifest")
            if _is_index(manifest):
                raise PullError("the registry's image index points at another index")
        else:
            digest, manifest = _sha256(raw), top
        config_digest, layer_digests = _blobs(manifest)
        target = self.root / digest.replace(":", "-")
        if (target / "config.json").is_file() and gc.keep_alive(target, "images"):
            progress(f"Image {ref} already unpacked")
            return Pulled(digest, target / "rootfs", _config(json.loads((target / "config.json").read_text())))
        work = self.staging / f"img-{uuid.uuid4().hex}"
        work.mkdir(parents=True)
        try:
            progress(f"Pulling {ref} ({digest})")
            await skopeo.copy(ref.by_digest(digest), work / "oci")
            progress("Verifying blobs")
            image_config = await asyncio.to_thread(_verified_layout, work / "oci", config_digest, layer_digests)
            progress("Unpacking layers")
            (work / "out").mkdir()
            await _run([UMOCI, "raw", "unpack", "--image", f"{work / 'oci'}:img", str(work / "out" / "rootfs")],
                       "umoci unpack", skopeo.env)
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


class _Skopeo:
    """skopeo with a private HOME: an auth file holding only the request's credentials
    (``--no-creds`` without), TLS verified unless the registry is an allow-listed private one."""

    def __init__(self, home: Path, ref: Reference, creds: tuple[str, str] | None, plain_http: bool) -> None:
        self.home = home
        self.proxy: pull_proxy.PullProxy | None = None
        self.wrapper: list[str] = []
        self.env = _env(home)
        os.chmod(home, 0o700)
        auths = {}
        if creds:
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            auths[ref.registry] = {"auth": token}
        self.authfile = home / "auth.json"
        fd = os.open(self.authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"auths": auths}, handle)
        self.creds = creds is not None
        self.tls = "false" if plain_http else "true"

    def via(self, proxy: pull_proxy.PullProxy, allowed: list[str], netns: list[str] | None = None) -> None:
        """Every connection but to the operator's allow-listed registries goes through ``proxy``;
        with ``netns`` (``pull_netns``) skopeo runs where nothing else is reachable at all."""
        self.proxy = proxy
        self.env["NO_PROXY"] = self.env["no_proxy"] = ",".join(["localhost", "127.0.0.1", "::1", *allowed])
        if netns is None:
            self.env.update(HTTPS_PROXY=proxy.url, HTTP_PROXY=proxy.url, https_proxy=proxy.url, http_proxy=proxy.url)
        else:
            self.wrapper = netns

    def _auth(self, prefix: str = "") -> list[str]:
        args = [f"--{prefix}authfile", str(self.authfile), f"--{prefix}tls-verify={self.tls}"]
        return args if self.creds else [*args, f"--{prefix}no-creds"]

    async def inspect_raw(self, ref: str) -> bytes:
        return await self._run([SKOPEO, "--insecure-policy", "inspect", "--raw", *self._auth(), f"docker://{ref}"],
                               f"inspect {ref}")

    async def copy(self, ref: str, layout: Path) -> None:
        await self._run([SKOPEO, "--insecure-policy", "copy", *self._auth("src-"), f"docker://{ref}",
                         f"oci:{layout}:img"], f"copy {ref}")

    async def _run(self, argv: list[str], what: str) -> bytes:
        if not Path(argv[0]).exists():
            raise PullError(f"{Path(argv[0]).name} is not installed (apt-get install skopeo umoci)")
        try:
            return await _run([*self.wrapper, *argv], what, self.env)
        except PullError:
            if self.proxy is not None and self.proxy.refused:
                raise PullError(f"{what}: refused {self.proxy.refused[0]}") from None
            raise


def _literal_or_localhost(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.lower() == "localhost"


def _netns_wrapper(sock: Path, allowed_registry: Reference | None) -> list[str]:
    """``unshare --net`` + ``pull_netns``; an allow-listed registry (an address or
    ``localhost``) is forwarded into the namespace through the proxy."""
    forwards: list[str] = []
    if allowed_registry is not None:
        host = allowed_registry.host
        named = f"[{host}]" if ":" in host else host
        for address in ["127.0.0.1", "::1"] if host.lower() == "localhost" else [host]:
            for port in [allowed_registry.port] if allowed_registry.port else [443, 80]:
                forwards += ["--forward", f"{address}|{port}|{named}:{port}"]
    return [UNSHARE, "--net", sys.executable, "-m", "sandlot.templates.pull_netns", str(sock), *forwards, "--"]


def _operator_proxy() -> bool:
    """The operator routes registry traffic through their own proxy: it decides, not ours."""
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"))


def _env(home: Path) -> dict[str, str]:
    env = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["NO_PROXY"] = ",".join(filter(None, [env.get("NO_PROXY", ""), "localhost,127.0.0.1,::1"]))
    env["no_proxy"] = env["NO_PROXY"]
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), XDG_CONFIG_HOME=str(home), DOCKER_CONFIG=str(home),
               REGISTRY_AUTH_FILE=str(home / "auth.json"))
    return env


def _verified_layout(layout: Path, config_digest: str, layer_digests: list[str]) -> dict[str, Any]:
    """The image's ``config`` (Env, User, WorkingDir) from the OCI layout skopeo wrote, once
    every blob is the one the verified source manifest names (skopeo converts the manifest to
    OCI, so its own digest changes, but config and layers are the same blobs)."""
    def blob(named: object, what: str) -> bytes:
        digest = check_digest(named, what)
        path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
        if path.is_symlink() or not path.is_file():
            raise PullError(f"the pulled {what} {digest} is missing")
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise PullError(f"the pulled {what} does not match its digest {digest}")
        return path.read_bytes() if what in ("manifest", "image config") else b""

    index = _json((layout / "index.json").read_bytes(), "OCI index")
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise PullError("the pulled image layout does not hold exactly one manifest")
    manifest = _json(blob(entries[0].get("digest"), "manifest"), "manifest")
    config, layers = _blobs(manifest)
    if config != config_digest or layers != layer_digests:
        raise PullError("the pulled image's config or layers are not the ones its verified manifest names")
    for digest in layers:
        blob(digest, "layer")
    image_config = _json(blob(config, "image config"), "image config").get("config") or {}
    if not isinstance(image_config, dict):
        raise PullError("the image config's 'config' is not an object")
    return image_config


def _config(image_config: dict[str, Any]) -> BuildConfig:
    """ENV/USER/WORKDIR of the image (a hostile config's wrong types are ignored, not a crash)."""
    def text(value: object, default: str) -> str:
        return value if isinstance(value, str) and value else default

    items = image_config.get("Env")
    env: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str) and "=" in item:
            name, value = item.split("=", 1)
            env[name] = value
    user = text(image_config.get("User"), "root").split(":", 1)[0] or "root"
    return BuildConfig(env=env, user=user, workdir=text(image_config.get("WorkingDir"), "/"))


async def _run(argv: list[str], what: str, env: dict[str, str]) -> bytes:
    if not Path(argv[0]).exists():
        raise PullError(f"{Path(argv[0]).name} is not installed (apt-get install skopeo umoci)")
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

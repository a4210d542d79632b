"""Content-addressed blob store shared by cluster nodes: ``sha256/<hex>`` objects plus small refs.

Layers, build contexts and pause images travel between ``sandlot node`` hosts through it
(docs/scale-out.md, "Blob store"). Two backends behind one small interface:

- ``file:///abs/dir``: a directory (a shared mount in a real cluster). Writes go to a temp
  file then ``rename`` into place, so a reader never sees half an object; no fsync (a lost
  object after a host crash is re-published or reported missing, never used half-written).
- ``s3://bucket/prefix?endpoint=http://host:port``: any S3-compatible bucket through boto3
  (credentials from boto3's usual chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  config files, instance roles; ``region`` may be given in the query too).

The store may be shared storage that others can write, so a fetched object is hashed while
it is copied and refused (:class:`BlobCorrupt`) unless it has the digest it was asked for:
callers only ever use verified local copies. Refs (``refs/<name>``) name a digest (an
upload's ``team/filesHash``); they are not verified themselves, what they point to is.
All calls block: async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

DIGEST = re.compile(r"^[0-9a-f]{64}$")
REF_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}(/[A-Za-z0-9_.-]{1,128}){0,4}$")
CHUNK = 1 << 20


class BlobError(Exception):
    """The blob store could not do what was asked (unreachable, bad URL, I/O)."""


class BlobMissing(BlobError):
    """No object with that digest (or no such ref)."""


class BlobCorrupt(BlobError):
    """An object's bytes do not have its digest: it is never used."""


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise BlobError(f"not a sha256 digest: {digest!r:.80}")
    return digest


def check_ref(name: str) -> str:
    if not REF_NAME.match(name) or any(part in (".", "..") for part in name.split("/")):
        raise BlobError(f"not a valid ref name: {name!r:.80}")
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashing(src: Any, dest: Path) -> str:
    """Copy a readable binary stream to ``dest``; the sha256 of what was written."""
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _copy_verified(src: Any, dest: Path, digest: str, url: str) -> None:
    """Copy an object's stream to ``dest``; :class:`BlobCorrupt` (``dest`` removed) unless its
    bytes hash to ``digest``: whichever backend it came from, nothing unverified is used."""
    got = _copy_hashing(src, dest)
    if got != digest:
        dest.unlink(missing_ok=True)
        raise BlobCorrupt(f"blob sha256:{digest} in {url} is corrupt (its bytes hash to {got}); not used")


class BlobStore(Protocol):
    url: str

    def has(self, digest: str) -> bool: ...
    def put_file(self, path: Path) -> str:
        """Store the file's bytes; their digest (an existing object is not written again)."""
        ...
    def fetch(self, digest: str, dest: Path) -> None:
        """The object's bytes at ``dest`` once verified; :class:`BlobCorrupt`/:class:`BlobMissing` otherwise."""
        ...
    def put_ref(self, name: str, digest: str) -> None: ...
    def get_ref(self, name: str) -> str | None: ...


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise BlobError(f"the blob directory must be absolute: {root}")
        self.root = root
        self.url = f"file://{root}"

    def _object(self, digest: str) -> Path:
        return self.root / "sha256" / check_digest(digest)

    def _tmp(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / uuid.uuid4().hex

    def has(self, digest: str) -> bool:
        return self._object(digest).is_file()

    def put_file(self, path: Path) -> str:
        tmp = self._tmp()
        try:
            with open(path, "rb") as src:
                digest = _copy_hashing(src, tmp)
            final = self._object(digest)
            if final.is_file():
                return digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    def fetch(self, digest: str, dest: Path) -> None:
        try:
            src = open(self._object(digest), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob sha256:{digest} is not in {self.url}") from None
        with src:
            _copy_verified(src, dest, digest, self.url)

    def put_ref(self, name: str, digest: str) -> None:
        final = self.root / "refs" / check_ref(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp()
        tmp.write_text(check_digest(digest))
        os.replace(tmp, final)

    def get_ref(self, name: str) -> str | None:
        try:
            value = (self.root / "refs" / check_ref(name)).read_text().strip()
        except FileNotFoundError:
            return None
        return check_digest(value)


class S3BlobStore:
    def __init__(self, url: str) -> None:
        import boto3  # type: ignore[import-untyped]  # here: single-box servers never pay for it

        parts = urlsplit(url)
        if not parts.netloc:
            raise BlobError(f"the S3 blob URL names no bucket: {url}")
        query = parse_qs(parts.query)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        endpoint = query.get("endpoint", [None])[0]
        region = query.get("region", [None])[0]
        self.url = url
        self._s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region or "us-east-1")

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def has(self, digest: str) -> bool:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key("sha256", check_digest(digest)))
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise BlobError(f"blob store {self.url}: {exc}") from exc
        return True

    def put_file(self, path: Path) -> str:
        digest = sha256_file(path)
        if not self.has(digest):
            try:
                self._s3.upload_file(str(path), self.bucket, self._key("sha256", digest))
            except Exception as exc:
                raise BlobError(f"blob store {self.url}: upload failed: {exc}") from exc
        return digest

    def fetch(self, digest: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._key("sha256", check_digest(digest)))["Body"]
        except ClientError as exc:
            if self._missing(exc):
                raise BlobMissing(f"blob sha256:{digest} is not in {self.url}") from None
            raise BlobError(f"blob store {self.url}: {exc}") from exc
        with body:
            _copy_verified(body, dest, digest, self.url)

    def put_ref(self, name: str, digest: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key("refs", check_ref(name)),
                            Body=check_digest(digest).encode())

    def get_ref(self, name: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._key("refs", check_ref(name)))["Body"]
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise BlobError(f"blob store {self.url}: {exc}") from exc
        with body:
            return check_digest(body.read(200).decode("ascii", "replace").strip())


def open_store(url: str) -> BlobStore:
    """The backend ``url`` names (``SANDLOT_BLOB_URL``)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileBlobStore(Path(urlsplit(url).path))
    if scheme == "s3":
        return S3BlobStore(url)
    raise BlobError(f"unsupported blob store URL (file:// or s3://): {url}")


def copy_out(store: BlobStore, digest: str, dest: Path) -> None:
    """``fetch`` into a temp name beside ``dest``, renamed into place only once verified."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        store.fetch(digest, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


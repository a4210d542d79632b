"""Garbage collection of the template caches: build layers and pulled images nothing uses.

The data dir is shared by every server on the machine (each with its own database and
``SANDLOT_INSTANCE``), so "not in my database" is not enough. An entry
(``<templates>/layers/<key>/`` or ``<templates>/images/<digest>/``) is kept when:

- a path in it is listed by a build row (any status) of the configured database or of any
  database a server registered here at start-up (:func:`register_database`);
- a path in it is listed by a ``runtime.json`` of any instance's sandbox (running, paused,
  warm-pool, build and start-check sandboxes) or a ``snapshot.json`` (E2B snapshots, forks,
  templates' post-ready snapshots);
- it was created or used by a build less than ``min_age`` ago: cache hits refresh its
  marker file's mtime through :func:`keep_alive`, so a build that is still running (or has
  committed a layer but not registered its build row yet) keeps what it uses.

``layers/.staging/`` and ``templates/base/`` are never candidates. Deletion renames an
entry to a dot-named tombstone in the same dir first (atomic: cache lookups miss from then
on, and the next build simply rebuilds it), then removes the tree; a crash leaves only
tombstones, which the next run removes. The age check and the rename happen under an
exclusive ``flock`` that :func:`keep_alive` takes shared, so a cache hit either makes the
entry young before gc looks or finds it already gone.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

TOMBSTONE_PREFIX = ".gc-deleted-"
LOCK_NAME = ".gc.lock"
MARKERS: dict[str, str] = {"layers": "meta.json", "images": "config.json"}
"""Per cache dir: the file whose mtime says when an entry was last created or used."""
DATABASES_DIR = "databases"
"""Under the templates dir: one file per database a server on this machine uses."""

Kind = Literal["layers", "images"]
KINDS: tuple[Kind, ...] = ("layers", "images")


class ReferencesUnknown(Exception):
    """A registered database could not be read: what it references is unknown, so gc refuses."""


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: Kind
    age_s: float
    """Since creation or the last cache hit; ``0`` for tombstones."""
    bytes: int
    tombstone: bool = False


# --- the protocol the caches follow -------------------------------------------------------------

@contextmanager
def _locked(cache_dir: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def keep_alive(entry: Path, kind: Kind) -> bool:
    """Mark a cache entry as just used; ``False`` if gc has already moved it away (a miss)."""
    try:
        with _locked(entry.parent, exclusive=False):
            os.utime(entry / MARKERS[kind])
        return True
    except FileNotFoundError:
        return False
    except OSError:  # e.g. a read-only cache: no gc runs there either, the entry is usable
        return (entry / MARKERS[kind]).is_file()


def entry_of(templates_dir: Path, path: Path | str) -> tuple[Kind, Path] | None:
    """The cache entry ``path`` lies in (``layers/<key>/fs`` → ``layers/<key>``), if any."""
    for kind in KINDS:
        name = _name_under(templates_dir / kind, str(path))
        if name:
            return kind, templates_dir / kind / name
    return None


def keep_alive_paths(templates_dir: Path, paths: Iterable[Path | str]) -> bool:
    """:func:`keep_alive` for the entries of a layer stack; ``False`` if one is gone."""
    ok = True
    for path in paths:
        found = entry_of(templates_dir, path)
        if found is not None:
            ok = keep_alive(found[1], found[0]) and ok
    return ok


# --- references -------------------------------------------------------------------------------

def register_database(templates_dir: Path, url: str) -> None:
    """Let every gc on this machine read this server's build rows (called at server start)."""
    normalized = normalized_url(url)
    if normalized is None:
        return
    registry = templates_dir / DATABASES_DIR
    registry.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = registry / f"{hashlib.sha256(normalized.encode()).hexdigest()[:20]}.json"
    tmp = registry / f".{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a URL may carry a password
    with os.fdopen(fd, "w") as out:
        json.dump({"url": normalized, "registeredAt": time.time()}, out)
    os.replace(tmp, target)


def registered_databases(templates_dir: Path) -> dict[str, Path]:
    """Database URL → its registration file."""
    found: dict[str, Path] = {}
    for file in sorted((templates_dir / DATABASES_DIR).glob("*.json")):
        try:
            found[json.loads(file.read_text())["url"]] = file
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError) as exc:
            raise ReferencesUnknown(f"{file}: {exc}") from exc
    return found


def database_references(url: str) -> set[str] | None:
    """Every path in ``builds.layers`` of the database; ``None`` when it is an SQLite file that
    no longer exists (its server is gone with it). Raises :class:`ReferencesUnknown`."""
    try:
        sqlite_path = _sqlite_path(url)
        if sqlite_path is not None:
            if not os.path.exists(sqlite_path):
                return None
            sqlite = sqlite3.connect(f"file:{quote(sqlite_path)}?mode=ro", uri=True, timeout=30)
            try:
                rows = [r[0] for r in sqlite.execute("SELECT layers FROM builds")]
            finally:
                sqlite.close()
        else:
            from sqlalchemy import create_engine, text

            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    rows = [r[0] for r in conn.execute(text("SELECT layers FROM builds"))]
            finally:
                engine.dispose()
        paths: set[str] = set()
        for value in rows:
            layers = json.loads(value) if isinstance(value, (str, bytes)) else value
            paths.update(str(p) for p in layers or [])
        return paths
    except Exception as exc:  # any failure means "unknown", never "nothing"
        raise ReferencesUnknown(f"{_redact(url)}: {exc}") from exc


def disk_references(data_dir: Path) -> set[str]:
    """Layer paths of every instance's sandboxes and of every snapshot (read twice around the
    snapshots so a sandbox becoming a snapshot, or the reverse, is seen in one of them)."""
    sandboxes = str(data_dir / "runtime" / "*" / "sandboxes" / "*" / "runtime.json")
    snapshots = [str(data_dir / "snapshots" / "*" / "*" / "snapshot.json"),
                 str(data_dir / "templates" / "snapshots" / "*" / "*" / "snapshot.json")]
    paths: set[str] = set()
    for pattern in (sandboxes, *snapshots, sandboxes):
        for file in glob.glob(pattern):
            try:
                layers = json.loads(Path(file).read_text()).get("layers") or []
            except FileNotFoundError:  # removed meanwhile: no longer a user
                continue
            except (OSError, ValueError) as exc:  # being written, or damaged: unknown, so refuse
                raise ReferencesUnknown(f"{file}: {exc}") from exc
            paths.update(str(p) for p in layers)
    return paths


# --- planning and deleting ----------------------------------------------------------------------

def plan(templates_dir: Path, referenced: set[str], min_age_s: float, *, only: Iterable[str] | None = None,
         now: float | None = None) -> list[Entry]:
    """What gc would delete: unreferenced entries older than ``min_age_s``, and tombstones.
    ``only`` restricts it to those entries (layer keys, image digests or paths)."""
    now = time.time() if now is None else now
    used = {(kind, name) for kind in KINDS for path in referenced
            if (name := _name_under(templates_dir / kind, path))}
    wanted = _selector(templates_dir, only)
    found: list[Entry] = []
    for kind in KINDS:
        cache_dir = templates_dir / kind
        try:
            children = sorted(os.scandir(cache_dir), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for child in children:
            if not child.is_dir(follow_symlinks=False):
                continue
            path = Path(child.path)
            if child.name.startswith(TOMBSTONE_PREFIX):
                original = child.name[len(TOMBSTONE_PREFIX):].rsplit("-", 1)[0]
                if wanted(kind, original, cache_dir / original):
                    found.append(Entry(path, kind, 0.0, _disk_usage(path), tombstone=True))
                continue
            if child.name.startswith(".") or (kind, child.name) in used or not wanted(kind, child.name, path):
                continue
            age = now - _last_used(path, kind)
            if age >= min_age_s:
                found.append(Entry(path, kind, age, _disk_usage(path)))
    return found


def delete(entries: Iterable[Entry], min_age_s: float) -> tuple[list[Entry], list[Entry]]:
    """Delete planned entries; returns (deleted, skipped: used or removed meanwhile)."""
    deleted, kept = [], []
    for entry in entries:
        target = entry.path
        if not entry.tombstone:
            with _locked(entry.path.parent, exclusive=True):
                if not entry.path.is_dir() or time.time() - _last_used(entry.path, entry.kind) < min_age_s:
                    kept.append(entry)
                    continue
                target = entry.path.with_name(f"{TOMBSTONE_PREFIX}{entry.path.name}-{uuid.uuid4().hex[:8]}")
                try:
                    os.rename(entry.path, target)
                except OSError:
                    kept.append(entry)
                    continue
        shutil.rmtree(target, ignore_errors=True)
        deleted.append(entry)
    return deleted, kept


# --- helpers ------------------------------------------------------------------------------------

def _name_under(cache_dir: Path, path: str) -> str | None:
    """The child of ``cache_dir`` that ``path`` is (or is inside), literally or after symlinks."""
    roots = {os.path.normpath(cache_dir), os.path.realpath(cache_dir)}
    for candidate in {os.path.normpath(path), os.path.realpath(path)}:
        for root in roots:
            if candidate.startswith(root + os.sep):
                name = candidate[len(root) + 1:].split(os.sep, 1)[0]
                if name:
                    return name
    return None


def _selector(templates_dir: Path, only: Iterable[str] | None) -> Callable[[Kind, str, Path], bool]:
    if only is None:
        return lambda _kind, _name, _path: True
    names, paths = set(), set()
    for value in only:
        if "/" in value:
            found = entry_of(templates_dir, value)
            if found:
                paths.add(found[1])
        else:
            names.update({value, value[:40], value.replace(":", "-")})
    return lambda _kind, name, path: name in names or path in paths


def _last_used(entry: Path, kind: Kind) -> float:
    times = []
    for path in (entry, entry / MARKERS[kind]):
        try:
            times.append(os.stat(path, follow_symlinks=False).st_mtime)
        except OSError:
            pass
    return max(times, default=time.time())  # vanished meanwhile: treat as brand new


def _disk_usage(root: Path) -> int:
    """Allocated bytes under ``root``, hard links counted once."""
    total, seen = 0, set()
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for child in it:
                try:
                    st = child.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink > 1 and not child.is_dir(follow_symlinks=False):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if child.is_dir(follow_symlinks=False):
                    stack.append(child.path)
    return total


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).database or None


def normalized_url(url: str) -> str | None:
    """``url`` with an absolute SQLite path (servers may run from another cwd); ``None`` for memory."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.set(database=os.path.abspath(parsed.database)).render_as_string(hide_password=False)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # any parse failure: never show the raw URL (it may carry a password)
        return "<database>"

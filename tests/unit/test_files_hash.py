"""``filesHash`` verification reproduces the SDKs' own hashes from the archives they upload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from e2b.template.utils import calculate_files_hash, tar_file_stream

from sandlot.templates import files_hash


def _context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "app" / "a.txt").write_text("alpha\n")
    (ctx / "app" / "sub" / "deep.bin").write_bytes(bytes(range(256)) * 50)
    os.chmod(ctx / "app" / "sub" / "deep.bin", 0o640)
    os.symlink("a.txt", ctx / "app" / "link")
    os.link(ctx / "app" / "a.txt", ctx / "app" / "hard")
    (ctx / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(ctx / "run.sh", 0o755)
    return ctx


def _python_upload(ctx: Path, out: Path, src: str, dest: str, gzip: bool) -> tuple[Path, str]:
    claimed = calculate_files_hash(src, dest, str(ctx), [], False, None)
    with tar_file_stream(src, str(ctx), [], False, gzip) as stream, open(out, "wb") as handle:
        shutil.copyfileobj(stream, handle)
    return out, claimed


@pytest.mark.parametrize(("src", "dest", "gzip"), [("app", "/srv/app/", True), ("run.sh", "/usr/bin/run.sh", False),
                                                   ("app/*.txt", "/x/", True), (".", "/ctx", False)])
def test_python_sdk_archives_verify(tmp_path: Path, src: str, dest: str, gzip: bool) -> None:
    archive, claimed = _python_upload(_context(tmp_path), tmp_path / "up.tar", src, dest, gzip)
    assert files_hash.verify(archive, files_hash.sha256_file(archive), src, dest, claimed) == "sdk"


def test_other_src_or_dest_or_content_does_not_verify(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    archive, claimed = _python_upload(ctx, tmp_path / "up.tar", "run.sh", "/a", False)
    digest = files_hash.sha256_file(archive)
    with pytest.raises(files_hash.Mismatch):
        files_hash.verify(archive, digest, "run.sh", "/b", claimed)
    (ctx / "run.sh").write_text("#!/bin/sh\necho HI\n")  # same size, other bytes
    forged, _ = _python_upload(ctx, tmp_path / "forged.tar", "run.sh", "/a", False)
    with pytest.raises(files_hash.Mismatch):
        files_hash.verify(forged, files_hash.sha256_file(forged), "run.sh", "/a", claimed)


def test_an_archive_named_by_its_own_digest_verifies(tmp_path: Path) -> None:
    archive, _ = _python_upload(_context(tmp_path), tmp_path / "up.tar", "app", "/a", True)
    digest = files_hash.sha256_file(archive)
    assert files_hash.verify(archive, digest, "anything", "/else", digest) == "archive"


def test_directories_that_match_no_recipe_are_undecidable(tmp_path: Path) -> None:
    """The JS SDK hashes a directory's st_size, which no tar records: not a Mismatch, ``None``."""
    archive, claimed = _python_upload(_context(tmp_path), tmp_path / "up.tar", "app", "/a", False)
    assert files_hash.verify(archive, files_hash.sha256_file(archive), "app", "/a", "0" * 64) is None


def test_not_a_tar_is_a_mismatch(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(100))
    with pytest.raises(files_hash.Mismatch):
        files_hash.verify(junk, files_hash.sha256_file(junk), "a", "/b", "0" * 64)


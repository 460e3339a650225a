"""Writing artifacts so that nothing half-written ever looks complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flow.errors import FlowError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; when the block ends
    without an error, it replaces ``target`` whole. On an error the old
    ``target`` (if any) stays as it was and the staging directory is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield staging
        if target.exists():
            old = staging.with_name(staging.name + "-old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove that files can be written in it, before any work is done.

    Permission bits do not tell (root ignores them, a read-only mount has them), so a
    probe file is created and removed.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise FlowError(f"{existing}: is a file, not a directory (the run directory must be a directory)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise FlowError(f"{path}: cannot write here ({exc.strerror})") from None
    return path


def remove_empty_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` if no file was written under it (its empty subfolders with it), then its
    parents up to (not including) ``stop`` while they are empty."""
    path = Path(path)
    if path.is_dir() and not any(p.is_file() or p.is_symlink() for p in path.rglob("*")):
        shutil.rmtree(path)
    path = path.parent
    while path != stop and path.is_relative_to(stop) and path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


@contextmanager
def run_directory(path: Path) -> Iterator[Path]:
    """A stage's output directory: checked writable up front; if the stage fails, a directory
    it created is removed again when nothing was written into it."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        yield writable_dir(path)
    except BaseException:
        if existing != path:
            remove_empty_dirs(path, existing)
        raise

"""Atomic writes: a file is written to a temporary `.<name>.<random>.tmp` in the same folder,
held under an advisory lock, fsynced and renamed over the target, so a crash or kill mid-write
leaves the previous file intact. `sweep` deletes the temporaries of a path that no live process
holds (a kill leaves them behind) and leaves other processes' writes in progress alone.
(Without `fcntl`, on Windows, nothing is swept.)
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale temporaries are not swept
    fcntl = None

__all__ = ["atomic_write"]


_CHUNK = 16 << 20
_STALE_AFTER_S = 10.0         # a temporary younger than this is never swept (see sweep)

_live: set[str] = set()            # temporaries this process is writing now
_live_lock = threading.Lock()


def _temp_pattern(base):
    return re.compile(r"\." + re.escape(base) + r"\.[A-Za-z0-9_]+\.tmp\Z")


def sweep(path):
    """Delete temporaries `.<name>.<random>.tmp` of `path` left by killed saves: those no
    process holds locked and older than a few seconds (a save takes its lock right after
    creating the file). Never raises."""
    if fcntl is None:
        return
    folder, base = os.path.split(os.path.abspath(path))
    pattern = _temp_pattern(base)
    try:
        entries = [e for e in os.scandir(folder) if pattern.match(e.name)]
    except OSError:
        return
    now = time.time()
    for e in entries:
        with _live_lock:
            if e.path in _live:
                continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < _STALE_AFTER_S:
                continue
            fd = os.open(e.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)                   # a live save holds it
            continue
        try:
            os.unlink(e.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _write(f, data):
    """Write `data` in chunks (a separate function so tests can interrupt a save midway)."""
    view = memoryview(data)
    for i in range(0, len(view), _CHUNK):
        f.write(view[i:i + _CHUNK])


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_as(path, data, who):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{who}: the folder {folder!r} does not exist (create it first, "
                                f"e.g. os.makedirs({folder!r}, exist_ok=True))")
    sweep(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    with _live_lock:
        _live.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # held until the rename: a live save
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o777)
            except OSError:
                os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        with _live_lock:
            _live.discard(tmp)
    _fsync_dir(folder)


def atomic_write(path, data) -> None:
    """Write the bytes `data` to `path` as `save` does: through a temporary file in the same
    (existing) folder, fsynced and renamed over the target."""
    atomic_write_as(os.fspath(path), data, "io.atomic_write")

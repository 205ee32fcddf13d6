"""Atomic file writes: every file pixal3d writes appears whole or not at all.

Data goes to a temporary file in the destination's folder (same file system), which is then renamed over the
destination (`os.replace`, atomic on POSIX and Windows). On any error the temporary file is removed, so a failed
or interrupted write leaves nothing behind and never clobbers an existing file with half of a new one.

Permissions: `tempfile.mkstemp` creates its file owner-only (0o600); before the rename the file gets the mode a
plain `open(path, "w")` would have given it: an existing destination's mode, else 0o666 less the process umask.
Folders filled and then renamed into place come from `make_temp_dir` (the mode `os.mkdir` would give), through
`atomic_folder`. JSON goes through `write_json_atomic`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is renamed to `path`.

    Use it for writers that want a file name (`safetensors.torch.save_file`, `Image.save`):

        with atomic_path(out) as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (Linux: read from /proc without changing it; elsewhere set and restored under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permission bits `open(path, "w")` would leave: the existing file's, else 0o666 & ~umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file` with the file mode of a plain `open()` (it creates files owner-only, 0o600).

    Not atomic by itself: use it inside `atomic_path` or inside a temporary folder that is renamed into place.
    """
    from safetensors.torch import save_file

    path = Path(path)
    mode = _mode_for(path)
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, mode)


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new temporary folder in `parent` (to fill, then rename into place), with the mode `os.mkdir` gives.

    `tempfile.mkdtemp` makes it owner-only (0o700); a folder renamed into place (a saved pipeline, a checkpoint)
    gets 0o777 less the umask instead, like any folder the user makes.
    """
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, make_parents: bool = True) -> None:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_path(path, make_parents) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str, make_parents: bool = True) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"), make_parents)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write `data` as JSON (indented by `indent`, ending in a newline) to `path` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `folder` to fill; when the block succeeds it replaces `folder`.

    An existing `folder` is first renamed aside (a `.NAME.old.*` sibling) and deleted after the rename, so at every
    moment either the old or the new folder is complete. On any error the temporary folder is removed and `folder`
    is left as it was. Temporary names start with `.NAME.`, so a crash leaves only dot-folders beside `folder`.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(folder.parent, prefix=f".{folder.name}.")
    try:
        yield tmp
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, old / "x")
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

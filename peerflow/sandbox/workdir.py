"""A session's working directory on the host: written by the server, used by the code.

Code in a session leaves whatever it likes in its folder between runs: symlinks to
`/etc/passwd`, a directory where a file is expected. The server (root) writes the next
run's files there, so every write walks the path with `O_NOFOLLOW` from the session's own
folder, replaces what is in the way instead of writing through it, and never follows a
link. Nothing the sandboxed code does can be running meanwhile: a session's runs are
serialised, and every process of a run is dead before the next one starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

__all__ = ["clear", "remove", "usage", "write_files"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_files(root: Path, files: dict[str, bytes], uid: int | None) -> None:
    """Write each `name -> content` under `root` (names already checked relative), owned
    by `uid` when given (the session's sandbox user), replacing whatever is there."""
    top = os.open(root, _DIR_FLAGS)
    try:
        for name, data in files.items():
            *dirs, leaf = name.split("/")
            fd = os.dup(top)
            try:
                for part in dirs:
                    fd = _enter(fd, part, uid)
                _remove_entry(fd, leaf)
                out = os.open(
                    leaf,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o666,
                    dir_fd=fd,
                )
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view) :]
                    if uid is not None:
                        os.fchown(out, uid, uid)
                finally:
                    os.close(out)
            finally:
                os.close(fd)
    finally:
        os.close(top)


def _enter(fd: int, part: str, uid: int | None) -> int:
    """The subdirectory `part` of directory `fd` (made if missing, replacing a file or
    link of that name); closes `fd`."""
    try:
        try:
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            _remove_entry(fd, part)  # a file or a symlink stands there: replace it
            os.mkdir(part, 0o777, dir_fd=fd)
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if uid is not None:
                os.fchown(sub, uid, uid)
        return sub
    finally:
        os.close(fd)


def _remove_entry(fd: int, name: str) -> None:
    """Remove `name` in directory `fd` if present: a file or link is unlinked, a
    directory removed with its contents (never following links)."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            for entry in os.listdir(sub):
                _remove_entry(sub, entry)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)


def usage(root: Path) -> int:
    """Bytes the folder takes on disk (its blocks; links not followed)."""
    total = 0
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def clear(root: Path) -> None:
    """Empty the folder, keeping the folder itself."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for entry in os.listdir(fd):
            _remove_entry(fd, entry)
    finally:
        os.close(fd)


def remove(root: Path) -> None:
    """Remove the folder and all in it (shutil's fd-based walk never follows links)."""
    shutil.rmtree(root, ignore_errors=True)

"""The one atomic writer: every results, config, table and figure file goes through it.

A file is written to a new temporary file beside its target, flushed to disk, and renamed over
the target, so that a reader sees either the previous file or the whole new one: a crash, a full
disk or a bad value midway leaves the previous file as it was and no temporary file behind.
New files get the usual mode (0666 less the umask), as ``open`` would give them.
"""

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from typing import IO, Any

from wtal_jax.errors import UserError


def check_output_path(path: str, *, overwrite: bool = True) -> None:
    """Raises UserError, one line, when ``path`` cannot be written as a file.

    That is: it names a folder, its folder is missing or is not a folder, or (unless
    ``overwrite``) a file is already there. Commands call it on a user's output path before
    their work, so that a bad ``--output`` (a typo in its folder included) fails at once rather
    than after minutes of computing.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f'{path}: is a folder; give the name of a file to write')
    if not os.path.isdir(folder):
        what = 'is not a folder' if os.path.exists(folder) else 'does not exist'
        raise UserError(f'{path}: folder {folder} {what}')
    if not overwrite and os.path.exists(path):
        raise UserError(f'{path}: exists; pass --force to replace it, or choose another file')


def _new_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new, empty file beside the target: (descriptor, path).

    Created with mode 0666 so that the umask decides, as for any new file (``mkstemp`` would
    make every result private to its owner, 0600).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)
    while True:
        tmp = os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp')
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # another writer's temporary of the same name: draw again
            continue


def _sync_folder(folder: str) -> None:
    """Makes the rename durable; file systems that cannot sync a folder are left as they are."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str, write: Callable[[IO], Any], *, binary: bool = False) -> None:
    """Calls ``write(f)`` on a new file object (text in UTF-8, or bytes with ``binary``) and
    puts the result at ``path`` atomically.

    A missing folder is created (a program's own outputs, e.g. a new run directory); a user's
    output path is checked by :func:`check_output_path` first.

    Raises:
      UserError: ``path`` names a folder, or a part of its folder is a file (nothing written).
      OSError: the system refused the write (a full disk, a permission); its ``filename`` is
        ``path`` and the previous file there is unchanged.
      Whatever ``write`` raises, the previous file unchanged.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file on the way: said below
            pass
    check_output_path(path)
    fd, tmp = _new_temporary(folder, os.path.basename(path))
    try:
        with open(fd, 'wb' if binary else 'w', encoding=None if binary else 'utf-8') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            # Name the file the user knows, not the temporary; say that nothing was lost.
            raise OSError(e.errno, f'{e.strerror or e} (not written; a previous file there is '
                                   'unchanged)', path) from e
        raise
    _sync_folder(folder)


def write_json_atomic(path: str, obj: Any, *, indent: int | None = None) -> None:
    """Writes ``obj`` as JSON (NaN and infinities refused) to ``path`` atomically."""
    write_atomic(path, lambda f: json.dump(obj, f, indent=indent, allow_nan=False))


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(text))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(data), binary=True)

"""The one atomic writer and the one bounded reader of users' files.

Writing: every results, config, table and figure file goes through :func:`write_atomic`. A file
is written to a new temporary file beside its target, flushed to disk, and renamed over
the target, so that a reader sees either the previous file or the whole new one: a crash, a full
disk or a bad value midway leaves the previous file as it was and no temporary file behind.
New files get the usual mode (0666 less the umask), as ``open`` would give them.

Reading: every JSON or text file a user gives (annotations, predictions, durations, split lists)
goes through :func:`read_bytes`. It refuses what is not a regular file (a FIFO would block the
read forever, ``/dev/zero`` would fill the memory), refuses a file larger than its stated limit
before reading it, and reads at most that many bytes. :func:`read_json` also refuses what a
plain ``json.load`` would accept silently or answer with a traceback: a key given twice in one
object, an integer too long for Python to convert.
"""

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from wtal_jax.errors import UserError

# The official ActivityNet 1.3 annotation file is about 12 MB, and a results file of its 4,926
# validation videos with 100 detections each about 45 MB; 1 GiB leaves twenty times that, while
# refusing what cannot be either (parsing JSON takes several times its size in memory).
JSON_LIMIT_BYTES = 1 << 30
# Split lists hold one id of a few dozen bytes per line: ActivityNet's largest subset, ~10,000
# videos, is ~200 KB, THUMOS'14's class files a few KB; 64 MiB is over 300 times that.
TEXT_LIMIT_BYTES = 64 << 20

_KINDS = ((stat.S_ISDIR, 'is a folder'), (stat.S_ISFIFO, 'is a named pipe (FIFO)'),
          (stat.S_ISCHR, 'is a character device'), (stat.S_ISBLK, 'is a block device'),
          (stat.S_ISSOCK, 'is a socket'))


def size_text(num_bytes: int) -> str:
    """1536 -> '1.5 KiB': sizes in messages, readable at any scale."""
    size, unit = float(num_bytes), 'bytes'
    for larger in ('KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f'{num_bytes} bytes' if unit == 'bytes' else f'{size:.1f} {unit}'


def available_memory_bytes() -> int | None:
    """Memory the system can still give without swapping: ``MemAvailable`` of /proc/meminfo
    (free pages where there is none); None where neither is known.

    Inside a container this is the host's figure, not what the container's limit leaves.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open('/proc/meminfo', encoding='ascii') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024  # the file says kB and means KiB
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    return None


def _exact(num_bytes: int) -> str:
    """'1.0 GiB (1073741825 bytes)': a size near a limit, which the rounded form would hide."""
    text = size_text(num_bytes)
    return text if num_bytes < 1024 else f'{text} ({num_bytes} bytes)'


def _kind_problem(mode: int) -> str | None:
    """What a file of ``st_mode`` is when it is not a regular file, for a message."""
    for is_kind, problem in _KINDS:
        if is_kind(mode):
            return problem
    return None if stat.S_ISREG(mode) else 'is not a regular file'


def file_problem(path: str) -> str | None:
    """None when ``path`` is (a symbolic link to) a regular file; else why it is not, for a
    message: 'file not found', 'is a folder', 'is a named pipe (FIFO)', 'is a character
    device', 'is a symbolic link loop', ...

    Raises:
      OSError: the system refused to look (a permission), with ``filename`` set.
    """
    try:
        return _kind_problem(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return 'file not found'
    except OSError as e:
        if e.errno == errno.ELOOP:
            return 'is a symbolic link loop'
        raise


def read_bytes(path: str, *, limit_bytes: int, what: str) -> bytes:
    """The whole content of the regular file ``path``, refused over ``limit_bytes``.

    ``what`` names the expected file in messages ('a JSON file'). Nothing but a regular file is
    opened, and never more than ``limit_bytes + 1`` bytes are read, whatever its size says.

    Raises:
      UserError: not a regular file (missing, a folder, a FIFO, a device, a symbolic link
        loop), or larger than ``limit_bytes``; or the system refused the read.
    """
    data = b''
    try:
        problem = file_problem(path)
        if problem is None:
            # O_NONBLOCK: should a FIFO replace the file after the check, opening it returns
            # at once instead of waiting for a writer; the fstat below then refuses it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
            with open(fd, 'rb') as f:
                st = os.fstat(f.fileno())
                problem, size = _kind_problem(st.st_mode), st.st_size
                if problem is None and size <= limit_bytes:
                    data = f.read(limit_bytes + 1)  # a file may hold more than its size says
                    size = max(size, len(data))
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})') from None
    if problem:
        raise UserError(f'{path}: cannot read: {problem}, expected {what}')
    if size > limit_bytes:
        found = f'at least {_exact(len(data))}' if data else _exact(size)
        raise UserError(f'{path}: cannot read: {found}, more than the {_exact(limit_bytes)} '
                        f'allowed for {what}')
    return data


def read_text(path: str, *, limit_bytes: int = TEXT_LIMIT_BYTES, what: str) -> str:
    """The UTF-8 text of ``path`` (:func:`read_bytes`), without the byte-order mark some
    editors put first (it would otherwise join the first line's content, unseen)."""
    data = read_bytes(path, limit_bytes=limit_bytes, what=what)
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise UserError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start}), expected '
                        f'{what}') from None


class _RepeatedKey(Exception):
    """A key given twice in one JSON object (json.load would keep the last silently)."""


class _LongInteger(Exception):
    """An integer literal longer than Python converts (sys.get_int_max_str_digits)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """One JSON object as a dict, refusing a repeated key (json's object_pairs_hook)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return obj


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # json's grammar guarantees digits: only the length can fail
        raise _LongInteger(len(text.lstrip('-'))) from None


def read_json(path: str, *, limit_bytes: int = JSON_LIMIT_BYTES, what: str = 'a JSON file'
              ) -> Any:
    """Parsed JSON of ``path`` (:func:`read_bytes`; UTF-8, a leading byte-order mark allowed).

    Raises:
      UserError: as :func:`read_bytes`; or not UTF-8, not JSON, nested deeper than Python's
        parser follows, a key repeated within one object (naming it), an integer longer than
        Python converts, or too large to parse in the memory there is.
    """
    data = read_bytes(path, limit_bytes=limit_bytes, what=what)
    try:
        return json.loads(data.decode('utf-8-sig'), object_pairs_hook=_unique_keys,
                          parse_int=_integer)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: not valid JSON ({" ".join(str(e).split())})') from None
    except _RepeatedKey as e:
        key = e.args[0] if len(e.args[0]) <= 80 else e.args[0][:80] + '...'
        raise UserError(f'{path}: key {key!r} is given twice in one object (a JSON reader '
                        'would keep the last one silently); keep one') from None
    except _LongInteger as e:
        raise UserError(f'{path}: an integer of {e.args[0]} digits; Python reads at most '
                        f'{sys.get_int_max_str_digits()} digits') from None
    except RecursionError:
        # Python's decoder recurses once per nesting level; no file of ours nests this deep.
        raise UserError(f'{path}: JSON nested too deeply for Python\'s parser') from None
    except MemoryError:
        raise UserError(f'{path}: {size_text(len(data))} of JSON is too large to parse in the '
                        'memory available') from None


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


def _holder() -> str:
    """This process, for the message refusing another holder: id, host, command, since when."""
    command = ' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    # An argument that is not valid UTF-8 (a path of other bytes) is written escaped.
    command = command[:200].encode('utf-8', 'backslashreplace').decode('utf-8')
    return (f'process {os.getpid()} on {socket.gethostname()} ({command}, since '
            f'{time.strftime("%Y-%m-%d %H:%M:%S")})')


def _named_holder(path: str) -> str:
    """Who holds a lock, as its holder wrote it in ``path``; 'another process' when that file
    is gone or unreadable (a lock on a folder does not need it)."""
    with contextlib.suppress(OSError, UserError):
        return read_text(path, limit_bytes=4096, what='a lock file').strip() or 'another process'
    return 'another process'


def _lock_folder(folder: str) -> int | None:
    """A descriptor of ``folder`` holding an exclusive flock on the folder itself; None where
    the file system cannot lock a folder (NFS emulates flock with POSIX locks, which need a
    file open for writing).

    Raises:
      BlockingIOError: another process holds it.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) |
                 getattr(os, 'O_CLOEXEC', 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:
        os.close(fd)
        return None
    return fd


def _lock_file(path: str) -> IO | None:
    """The file ``path`` (created) with an exclusive flock on it; None when another process
    holds it."""
    while True:
        lock = open(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o666),
                    'r+', encoding='utf-8')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        # A holder removes the file before it unlocks: if ours was removed after we opened it,
        # it guards nothing (a newcomer would lock a new file), so open the path again.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                return lock
        lock.close()


def _refusal(busy: str | Callable[[str], str], holder: str) -> UserError:
    return UserError(busy(holder) if callable(busy) else f'{busy} ({holder})')


@contextlib.contextmanager
def hold_lock(path: str, *, busy: str | Callable[[str], str], folder: str | None = None
              ) -> Iterator[Callable[[], None]]:
    """Holds an exclusive lock for a block: on ``folder`` itself when given, else on the file
    ``path``, which names the holder either way (created, and removed after).

    Another process holding it is refused at once: UserError ``busy (HOLDER)``, or
    ``busy(HOLDER)`` when ``busy`` is a function, where HOLDER names that process. The lock
    dies with its process, so a killed holder leaves at most a stale file, which the next holder
    takes over.

    A lock on the file itself would guard nothing once a user deleted the file (a newcomer
    would create and lock another): a lock on the folder holds whatever is deleted inside it.
    Where the file system cannot lock a folder, the file is locked instead, and the function
    this yields raises UserError once ``path`` no longer names the locked file; call it before
    each write (it does nothing while the folder is locked).
    """
    fd = None
    if folder is not None:
        try:
            fd = _lock_folder(folder)
        except BlockingIOError:
            raise _refusal(busy, _named_holder(path)) from None
    lock = None
    if fd is None:
        lock = _lock_file(path)
        if lock is None:
            raise _refusal(busy, _named_holder(path))

    def check() -> None:
        if lock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                return
        raise UserError(f'{path}: removed or replaced while this process held it, so another '
                        'may be writing here now; stopped')

    try:
        try:
            if lock is None:   # the folder is locked: the file only names the holder
                with open(path, 'w', encoding='utf-8') as note:
                    note.write(_holder() + '\n')
            else:
                lock.truncate()
                lock.write(_holder() + '\n')
                lock.flush()
        except OSError as e:   # a full disk: the first write of a run, named
            raise OSError(e.errno, f'{e.strerror or e} (writing the lock file that names this '
                                   'process)', path) from None
        yield check
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if lock is not None:
            lock.close()
        if fd is not None:
            os.close(fd)

"""Small file helpers shared by every module that writes results: atomic JSON writes."""

import json
import os
import tempfile
from typing import Any


def write_json_atomic(path: str, obj: Any, *, indent: int | None = None) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically (temporary file in the same folder, then rename).

    A crash or a bad value midway leaves any previous file at ``path`` untouched.
    """
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False))


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically; see :func:`write_json_atomic`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

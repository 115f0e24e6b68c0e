"""A run's training log, ``metrics.jsonl``: one JSON row per training log window and per
evaluation, in step order, crash-safe.

Each row is written as one line with its newline in one call and flushed at once, so a killed
process loses nothing it has written and can leave at most a torn last line, which a reader
drops with a warning. A resumed run keeps the rows up to the step it restored (rewritten
atomically). Rows that one writer cannot have written (a step going back, a row twice: a
second training of the same run at the same time) are refused in one line.
"""

import json
import os
import sys

from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_text_atomic


def read(path: str, *, quiet: bool = False, upto: int | None = None) -> list[dict]:
    """The rows of ``path`` in order (those of steps up to ``upto`` if given); [] when absent.

    Damage other than a torn last line is an error, and so are rows of two writers
    (:func:`mixed_rows`).
    """
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: unreadable ({e})') from None
    if lines[-1] and not quiet:
        print(f'warning: {path}: dropped a torn last line {len(lines)} (a crash while writing '
              'it)', file=sys.stderr)
    rows = []
    for number, line in enumerate(lines[:-1], 1):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or not isinstance(row.get('step'), int):
            raise UserError(f'{path}: line {number} is not a metrics row')
        rows.append(row)
    numbered = [(n, r) for n, r in enumerate(rows, 1) if upto is None or r['step'] <= upto]
    problem = mixed_rows(numbered)
    if problem:
        raise UserError(f'{path}: {problem}: rows of two writers (a second training of this '
                        'run at the same time), a history no report can use; train again in a '
                        'new --workdir')
    return [r for _, r in numbered]


def mixed_rows(rows: list[tuple[int, dict]]) -> str | None:
    """Where numbered metrics rows (line, row) stop being the log of one writer, which appends
    every row once, in step order: a step before the one above it, or a row (step, split,
    seed) given twice. None when they are one writer's."""
    seen, last = set(), 0
    for line, row in rows:
        step, split, seed = row['step'], row.get('split'), row.get('seed')
        if step < last:
            return f'line {line} has step {step} after step {last}'
        if (step, split, seed) in seen:
            of = '' if seed is None else f' of seed {seed}'
            return f'line {line} repeats the {split} row of step {step}{of}'
        seen.add((step, split, seed))
        last = step
    return None


def rewrite(path: str, rows: list[dict]) -> None:
    """Replaces the log by ``rows``, atomically (nothing to do for no rows and no log)."""
    if rows or os.path.exists(path):
        write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in rows))


def append(path: str, row: dict) -> None:
    """Appends one row, flushed to the operating system at once; :func:`sync` makes it
    durable (at checkpoints)."""
    try:
        with open(path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(row, allow_nan=False) + '\n')
            f.flush()
    except OSError as e:   # a full disk: a torn last line at worst, dropped on resume
        raise OSError(e.errno, f'{e.strerror or e} (the row of step {row["step"]} not '
                               'written)', path) from None


def sync(path: str) -> None:
    if os.path.exists(path):
        with open(path, 'rb+') as f:
            os.fsync(f.fileno())

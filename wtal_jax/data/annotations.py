"""The one reader of annotation files (ActivityNet-style JSON) and the THUMOS'14 class list.

NumPy only (no JAX). Training (``data.dataset``) and evaluation (``postprocess.eval_files``) both
read annotations through :func:`load_annotations`, and predictions files share its JSON reader and
its segment checks, so a file is accepted or refused the same way by every command.

Format (SPEC §1)::

    {"database": {VIDEO: {"subset": "test", "duration": 123.4 (optional),
                          "annotations": [{"segment": [start, end], "label": "HighJump"}, ...]}}}

Segment bounds are seconds, numbers or numeric strings (``"18.6"``). Every problem raises
:class:`~wtal_jax.errors.UserError` with a one-line message naming the file, the video and the
instance.
"""

import dataclasses
import math
import numbers
import reprlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from wtal_jax import io_utils
from wtal_jax.errors import UserError

# The fixed THUMOS'14 class order (SPEC §1); class index i of every output refers to this list.
THUMOS14_CLASSES = (
    'BaseballPitch', 'BasketballDunk', 'Billiards', 'CleanAndJerk', 'CliffDiving',
    'CricketBowling', 'CricketShot', 'Diving', 'FrisbeeCatch', 'GolfSwing', 'HammerThrow',
    'HighJump', 'JavelinThrow', 'LongJump', 'PoleVault', 'Shotput', 'SoccerPenalty',
    'TennisSwing', 'ThrowDiscus', 'VolleyballSpiking')


@dataclasses.dataclass(frozen=True, eq=False)
class VideoAnnotation:
    """One video's entry of an annotation file.

    Attributes:
      subset: e.g. 'train', 'validation' or 'test'.
      duration: seconds, or None when the file gives none (THUMOS'14 gives none).
      segments: (N, 2) float64 [start, end] seconds, as written (not clipped), start <= end.
      labels: N class names, one per row of ``segments``.
    """
    subset: str
    duration: float | None
    segments: np.ndarray
    labels: tuple[str, ...]


def one_line(message: object) -> str:
    """Collapses whitespace so an embedded library message keeps a UserError to one line."""
    return ' '.join(str(message).split())


# Values from a user's file, shortened for a message: bounded length and nesting depth.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def read_json(path: str) -> object:
    """Parsed JSON of an annotation, predictions or durations file, read by the one bounded
    reader (:func:`wtal_jax.io_utils.read_json`, limit ``JSON_LIMIT_BYTES``): a missing,
    unreadable or oversized file, a FIFO or a device, malformed or too deeply nested JSON, a
    key given twice in one object (a video of ``database`` or ``results`` included) and an
    integer too long to convert are each a UserError naming the file."""
    return io_utils.read_json(path, what='a JSON file')


def seconds(value: object, where: str) -> float:
    """A finite number of seconds from a number or a numeric string (``"18.6"``), as the
    official evaluation's ``float()`` reads it; ``where`` starts the error message."""
    # bool is an int subclass, but true/false is never a time.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise UserError(f'{where} {_short.repr(value)} is not a number')
    try:
        result = float(value)
    except (ValueError, OverflowError):
        raise UserError(f'{where} {_short.repr(value)} is not a number') from None
    if not math.isfinite(result):
        raise UserError(f'{where} {_short.repr(value)} is not finite')
    return result


def parse_segment(value: object, where: str) -> tuple[float, float]:
    """``[start, end]`` seconds, validated: two finite numbers with ``start <= end``.

    Zero-length segments occur in real files and are kept; a reversed one is a typo (and the
    official evaluation would count it as a match at every threshold), so it is refused.
    """
    is_pair = (isinstance(value, (list, tuple))
               or (isinstance(value, np.ndarray) and value.ndim == 1)) and len(value) == 2
    if not is_pair:
        raise UserError(f'{where}: segment {_short.repr(value)} is not [start, end]')
    start, end = (seconds(bound, f'{where}: segment bound') for bound in value)
    if end < start:
        raise UserError(f'{where}: segment [{start}, {end}] ends before it starts')
    return start, end


def parse_instance(item: object, where: str) -> tuple[str, float, float]:
    """One ``{"label": ..., "segment": [start, end]}`` object → (label, start, end)."""
    if not isinstance(item, Mapping) or 'label' not in item or 'segment' not in item:
        raise UserError(f'{where}: expected an object with "label" and "segment", got '
                        f'{_short.repr(item)}')
    label = item['label']
    if not isinstance(label, str):
        raise UserError(f'{where}: label {_short.repr(label)} is not a string')
    return (label, *parse_segment(item['segment'], where))


def _parse_video(path: str, video: str, entry: object) -> VideoAnnotation:
    """One ``database`` entry → :class:`VideoAnnotation`, validated."""
    where = f'{path}: video {video}'
    if not isinstance(entry, Mapping):
        raise UserError(f'{where}: entry is a {type(entry).__name__}, expected an object')
    subset = entry.get('subset')
    if not isinstance(subset, str):
        raise UserError(f'{where}: "subset" is missing or not a string')
    duration = entry.get('duration')
    if duration is not None:
        duration = seconds(duration, f'{where}: duration')
        if duration <= 0:
            raise UserError(f'{where}: duration {duration} s is not positive')
    items = entry.get('annotations', [])
    if not isinstance(items, list):
        raise UserError(f'{where}: "annotations" is a {type(items).__name__}, expected a list')
    parsed = [parse_instance(item, f'{where}: annotation {j}') for j, item in enumerate(items)]
    segments = np.array([p[1:] for p in parsed], np.float64).reshape(-1, 2)
    return VideoAnnotation(subset=subset, duration=duration, segments=segments,
                           labels=tuple(p[0] for p in parsed))


def load_annotations(path: str) -> dict[str, VideoAnnotation]:
    """Reads and validates a whole annotation file (format above, SPEC §1).

    Returns:
      video id → :class:`VideoAnnotation`, in file order; videos without annotations included.
    """
    raw = read_json(path)
    database = raw.get('database') if isinstance(raw, Mapping) else None
    if not isinstance(database, Mapping):
        raise UserError(f'{path}: no "database" object at the top level (expected the '
                        'ActivityNet format)')
    return {str(video): _parse_video(path, str(video), entry) for video, entry in database.items()}


def checked_class_list(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, refusing an empty list or a repeated name."""
    names = tuple(names)
    if not names:
        raise UserError('the class list is empty')
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f'the class list names {", ".join(repeated)} more than once')
    return names


def class_names_from(annotations: Mapping[str, VideoAnnotation], subsets: Iterable[str],
                     configured: Sequence[str] = ()) -> tuple[str, ...]:
    """The class list: ``configured`` if non-empty, else the sorted labels found in ``subsets``."""
    if configured:
        return checked_class_list(configured)
    subsets = tuple(subsets)
    found = {label for a in annotations.values() if a.subset in subsets for label in a.labels}
    if not found:
        raise UserError(f'no action labels in annotation subsets {", ".join(subsets)}; '
                        'configure the class list')
    return tuple(sorted(found))

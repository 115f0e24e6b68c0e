"""Loading + validating per-video feature files and splits (SPEC §1); annotations are read by
:mod:`wtal_jax.data.annotations`.

NumPy only (no JAX), so data loading is quick to import and can feed any framework.

Layout read by :func:`load_split`::

    ROOT/ANNOTATION_FILE                   ActivityNet-style JSON ({"database": {VIDEO: ...}})
    ROOT/SPLIT_FILE                        one video id per line
    ROOT/FEATURE_DIR/{rgb,flow}/VIDEO.npy  float32 (num_segments, per-stream size)

Every problem with these files raises :class:`~wtal_jax.errors.UserError` with a one-line message
that names the file or video and the numbers involved. Files from users never run code: ``.npy``
files are read with ``allow_pickle=False`` after their header has been checked against the file
size, and video ids are plain file names that cannot leave the feature folder.
"""

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from wtal_jax.data.annotations import (VideoAnnotation, checked_class_list, load_annotations,
                                       one_line)
from wtal_jax.errors import UserError
from wtal_jax.io_utils import available_memory_bytes, file_problem, read_text, size_text

# 16-frame segments of 25 fps video (THUMOS convention, SPEC §1).
SEGMENT_SECONDS = 16 / 25

MODALITIES = ('rgb', 'flow', 'all')
# What load_split does with a video of the split file whose feature files do not exist.
MISSING_POLICIES = ('error', 'skip')


class GroundTruth(NamedTuple):
    """Action instances of one video, clipped to the video's end.

    Attributes:
      segments: (N, 2) float64 [start, end] seconds, 0 <= start <= end <= video end.
      classes: (N,) int64 indices into the split's ``class_names``.
    """
    segments: np.ndarray
    classes: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The videos of one split with their features and labels, all in memory.

    Attributes:
      names: V video ids, in split-file order.
      features: V float32 arrays of shape (n_i, D).
      labels: (V, C) float32 multi-hot video-level labels.
      durations: (V,) float64 seconds from the annotation file, NaN where unknown.
      num_segments: (V,) int64, n_i.
      class_names: C class names; column c of ``labels`` is ``class_names[c]``.
      num_clipped: how many annotations end after their video (clipped at its end for ``gt``).
      gt: V :class:`GroundTruth`, instances clipped to the video (for training-time use).
      num_before_start: how many start before 0 s (clipped at 0 for ``gt``; a negative time is
        a mistake in the file, said apart from the ends).
      missing: videos of the split file left out because their feature files do not exist
        (``missing='skip'``), in split-file order; their ground truth still counts in
        evaluation, as missed (the official convention).
    """
    names: tuple[str, ...]
    features: list[np.ndarray]
    labels: np.ndarray
    durations: np.ndarray
    num_segments: np.ndarray
    class_names: tuple[str, ...]
    num_clipped: int
    gt: tuple[GroundTruth, ...]
    num_before_start: int = 0
    missing: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @property
    def feature_dim(self) -> int:
        """D, the size of one segment's feature vector."""
        return int(self.features[0].shape[1])


# ----------------------------------------------------------------------------------------------
# Feature files


class NpyHeader(NamedTuple):
    """What the header of a ``.npy`` file declares, read without loading the data.

    Attributes:
      shape: the array's shape.
      dtype: its element type.
      data_bytes: how many bytes the file holds after the header.
    """
    shape: tuple[int, ...]
    dtype: np.dtype
    data_bytes: int

    @property
    def declared_bytes(self) -> int:
        """Bytes the declared array needs (Python ints: no overflow for absurd shapes)."""
        return math.prod(self.shape) * self.dtype.itemsize


def feature_file_exists(path: str) -> bool:
    """Whether the feature file ``path`` exists: True for a regular file (or a link to one),
    False for nothing there (or a link to nothing); anything else there (a folder, a FIFO, a
    device, a symbolic link loop) is a UserError saying what it is."""
    try:
        problem = file_problem(path)
    except OSError as e:
        raise UserError(f'{path}: cannot read ({one_line(e.strerror or e)})') from None
    if problem is not None and problem != 'file not found':
        raise UserError(f'{path}: {problem}, expected a .npy feature file')
    return problem is None


def read_npy_header(path: str) -> NpyHeader:
    """Reads and checks the header of the ``.npy`` file at ``path``; never unpickles anything.

    Refuses a missing file, anything but a regular file (a folder, a FIFO, a device, a symbolic
    link loop), an ``.npz`` archive or other non-``.npy`` file, a damaged header, and a header
    that declares more bytes than the file holds (a truncated file, or a forged header that
    would make ``np.load`` try to allocate terabytes).
    """
    if not feature_file_exists(path):
        raise UserError(f'{path}: feature file not found')
    try:
        with open(path, 'rb') as f:
            magic = f.read(6)
            # Checked first so the message says what the file is, not what NumPy tried next.
            if magic.startswith(b'PK'):
                raise UserError(f'{path}: an .npz archive, expected one .npy array')
            if magic != b'\x93NUMPY':
                raise UserError(f'{path}: not a readable .npy array (no NumPy header)')
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # 3.0 only differs for structured dtypes with non-Latin-1 names
                raise UserError(f'{path}: .npy format version {version[0]}.{version[1]}, '
                                'expected 1.0 or 2.0 (a plain numeric array)')
            data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    except OSError as e:
        raise UserError(f'{path}: cannot read ({one_line(e.strerror)})') from None
    except (ValueError, EOFError) as e:
        raise UserError(f'{path}: not a readable .npy array ({one_line(e)})') from None
    header = NpyHeader(shape=tuple(shape), dtype=dtype, data_bytes=data_bytes)
    # An object array holds pickles; its data size says nothing, and it is refused anyway.
    if not dtype.hasobject and header.declared_bytes > data_bytes:
        raise UserError(f'{path}: not a readable .npy array (the header declares {shape} '
                        f'{dtype}, {size_text(header.declared_bytes)}, but the file holds '
                        f'{size_text(data_bytes)} of data)')
    return header


def _check_feature_layout(where: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Numbers, 2-D, at least one segment and one value: what a feature array must be."""
    if dtype.hasobject:
        raise UserError(f'{where}: an object array (a pickle), expected numbers; pickles are '
                        'never loaded, they can run code')
    if dtype.kind not in 'fiu':
        raise UserError(f'{where}: dtype {dtype}, expected numbers (float32)')
    if len(shape) != 2:
        raise UserError(f'{where}: array of shape {shape}, expected (num_segments, size)')
    if shape[0] == 0:
        raise UserError(f'{where}: zero segments')
    if shape[1] == 0:
        raise UserError(f'{where}: zero values per segment')


def check_feature_header(path: str) -> NpyHeader:
    """The header of a feature file, checked to be (n, D) numbers with n >= 1, D >= 1.

    Reads only the header, so it is cheap enough for every file of a large data set.
    """
    header = read_npy_header(path)
    _check_feature_layout(path, header.dtype, header.shape)
    return header


def check_feature_array(array: np.ndarray, where: str) -> np.ndarray:
    """A loaded feature array as (n, D) float32, checked: numbers, n >= 1, only finite values.

    Any numeric dtype is accepted (float16 releases included). ``where`` names the array in
    messages (a file, or a video of a file).
    """
    _check_feature_layout(where, array.dtype, array.shape)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise UserError(f'{where}: NaN or Inf at segment {first} of {array.shape[0]}')
    if array.dtype.kind == 'f' and array.dtype.itemsize > 4:
        # Checked before the cast, which would turn 1e300 into Inf with a RuntimeWarning.
        limit = np.finfo(np.float32).max
        beyond = np.abs(array) > limit
        if beyond.any():
            first = int(np.flatnonzero(beyond.any(axis=1))[0])
            raise UserError(f'{where}: value {array[first][beyond[first]][0]:.6g} at segment '
                            f'{first} of {array.shape[0]} is beyond float32 (at most '
                            f'{limit:.6g} in magnitude)')
    return array.astype(np.float32, copy=False)


def _check_memory(path: str, header: NpyHeader) -> None:
    """Refuses a feature file whose loading would need more memory than there is available.

    The header has been checked against the file size; a sparse file can still be as large as
    its header says (terabytes on disk that take no space), and ``np.load`` would then fail with
    a MemoryError, or be killed by the system halfway. Counted: the array, its float32 copy
    (for other dtypes) and the per-value finiteness mask.
    """
    values = math.prod(header.shape)
    copy = 4 * values if header.dtype != np.float32 else 0
    need = header.declared_bytes + copy + values
    available = available_memory_bytes()
    if available is not None and need > available:
        raise UserError(f'{path}: the header declares {header.shape} {header.dtype}; loading it '
                        f'needs about {size_text(need)}, more than the {size_text(available)} '
                        'of memory available')


def load_feature_array(path: str) -> np.ndarray:
    """One validated feature file: (n, D) float32 with n >= 1 and only finite values.

    Accepts any numeric dtype (float16 releases included) and returns float32. Rejects a missing
    file, anything that is not a plain numeric ``.npy`` array (pickles, object arrays, ``.npz``
    archives, text), a header that claims more data than the file holds or than the memory
    available can take, non-2-D arrays, zero segments, NaN/Inf, and float64 values beyond
    float32.
    """
    header = check_feature_header(path)
    _check_memory(path, header)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f'{path}: not a readable .npy array ({one_line(e)})') from None
    return check_feature_array(array, path)


def _combine_streams(paths: Sequence[str], arrays: Sequence[np.ndarray], feature_dim: int | None,
                     what: str) -> np.ndarray:
    """Concatenates per-stream arrays along features after checking lengths and total size."""
    lengths = [a.shape[0] for a in arrays]
    if len(set(lengths)) > 1:
        detail = ', '.join(f'{p} has {n}' for p, n in zip(paths, lengths))
        raise UserError(f'{what}: streams differ in length: {detail} segments')
    features = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
    if feature_dim is not None and features.shape[1] != feature_dim:
        sizes = ' + '.join(str(a.shape[1]) for a in arrays)
        raise UserError(f'{what}: {features.shape[1]} values per segment ({sizes} in '
                        f'{", ".join(paths)}), expected feature_dim {feature_dim}')
    return features


def load_feature_files(paths: Sequence[str], *, feature_dim: int | None = None) -> np.ndarray:
    """Features of one video for ``detect``: one file, or rgb + flow files concatenated.

    Args:
      paths: one .npy file (n, D), or two (n, D_rgb) and (n, D_flow) in [rgb, flow] order.
      feature_dim: expected D of the result, or None to accept any.
    Returns:
      (n, D) float32.
    """
    paths = list(paths)
    if len(paths) not in (1, 2):
        raise UserError(f'expected 1 feature file or 2 (rgb, flow), got {len(paths)}')
    arrays = [load_feature_array(p) for p in paths]
    return _combine_streams(paths, arrays, feature_dim, ' + '.join(paths))


# ----------------------------------------------------------------------------------------------
# Splits


def check_video_id(video: str, where: str) -> None:
    """Refuses a video id that is not a plain file name: ids are joined into feature paths.

    Empty ids, ``.``, ``..`` and ids with a path separator (``../x``, ``/abs``, ``a\\b``) or a NUL
    byte would read or write outside the feature folder. ``where`` names the file they came from.
    """
    separators = {'/', '\\', os.sep, os.altsep or '/', '\0'}
    if video in ('', '.', '..') or any(c in video for c in separators):
        raise UserError(f'{where}: video id {video!r} is not a plain file name (it would leave '
                        'the feature folder)')


def read_split_file(path: str) -> tuple[str, ...]:
    """Video ids of a split file, one per line (blank lines ignored); at least one, no repeats.

    Every id must be a plain file name (:func:`check_video_id`). Read by the bounded reader
    (:func:`wtal_jax.io_utils.read_text`), which drops a leading UTF-8 byte-order mark.
    """
    text = read_text(path, what='a split file (one video id per line)')
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise UserError(f'{path}: split file lists no videos')
    seen = set()
    for name in names:
        check_video_id(name, path)
        if name in seen:
            raise UserError(f'{path}: video {name} is listed more than once')
        seen.add(name)
    return names


def _check_entry(video: str, entry: VideoAnnotation | None, *, split_path: str,
                 annotation_path: str, subset: str, class_index: Mapping[str, int],
                 require_labels: bool) -> None:
    """Cross-checks one split entry against the annotation file, before any feature is read."""
    if entry is None:
        raise UserError(f'{split_path}: video {video} has no entry in {annotation_path}')
    if entry.subset != subset:
        raise UserError(f'{annotation_path}: video {video} is in subset {entry.subset!r}, but '
                        f'{split_path} is read as subset {subset!r}')
    for label in entry.labels:
        if label not in class_index:
            raise UserError(f'{annotation_path}: video {video} has label {label!r}, which is not '
                            f'among the {len(class_index)} configured classes')
    if require_labels and not entry.labels:
        # Weak supervision learns from the video-level label alone; a video without one teaches
        # nothing and would make the label normalisation y / sum(y) divide by zero.
        raise UserError(f'{annotation_path}: training video {video} has no annotations, so no '
                        'video-level label')


def _feature_paths(root: str, feature_dir: str, modality: str, video: str) -> list[str]:
    """ROOT/FEATURE_DIR/{rgb,flow}/VIDEO.npy for the streams of ``modality``, rgb first."""
    streams = ('rgb', 'flow') if modality == 'all' else (modality,)
    return [os.path.join(root, feature_dir, s, video + '.npy') for s in streams]


def _split_missing(names: Sequence[str], paths: Sequence[Sequence[str]], *, missing: str,
                   split_path: str, feature_folder: str) -> tuple[str, ...]:
    """The videos among ``names`` with a feature file absent; raises for ``missing='error'``.

    All videos are checked before any feature is read, so the message can say how many are
    missing in all, not only the first. A path that holds something other than a file (a
    folder, a symbolic link loop) is not missing: it is an error of its own.
    """
    absent = tuple(video for video, files in zip(names, paths)
                   if not all(feature_file_exists(p) for p in files))
    if absent and missing == 'error':
        shown = ', '.join(absent[:5]) + (', ...' if len(absent) > 5 else '')
        raise UserError(f'{split_path}: {len(absent)} of {len(names)} videos have no feature '
                        f'files under {feature_folder} ({shown}); set data.missing=skip to leave '
                        'them out')
    if len(absent) == len(names):
        raise UserError(f'{split_path}: none of its {len(names)} videos has feature files under '
                        f'{feature_folder}')
    return absent


class Clipped(NamedTuple):
    """How many annotations of a video reach outside it, each clipped to it for training.

    An annotation that does both is counted in both.

    Attributes:
      after_end: annotations that end after the video does (real files have them).
      before_start: annotations that start before 0 s (a negative time: a mistake in the file).
    """
    after_end: int
    before_start: int


def clip_ground_truth(entry: VideoAnnotation, class_index: Mapping[str, int],
                      video_end: float) -> tuple[GroundTruth, Clipped]:
    """Instances clipped to [0, video_end] seconds, and how many reached outside (:class:`Clipped`).

    Real annotation files contain instances that end after the video does; for training-time use
    they are cut at the end, counted, and kept (zero-length ones too). A negative start is cut at
    0 and counted apart, so that a message can say which of the two happened.
    """
    clipped = np.clip(entry.segments, 0.0, video_end)
    counts = Clipped(after_end=int((entry.segments[:, 1] > video_end).sum()),
                     before_start=int((entry.segments[:, 0] < 0).sum()))
    classes = np.array([class_index[label] for label in entry.labels], np.int64)
    return GroundTruth(segments=clipped, classes=classes), counts


def load_split(root: str, *, annotation_file: str, split_file: str, feature_dir: str,
               subset: str, modality: str, class_names: Sequence[str],
               feature_dim: int | None, segment_seconds: float = SEGMENT_SECONDS,
               use_duration: bool = False, require_labels: bool = False,
               missing: str = 'error', progress: bool = False) -> Split:
    """Loads and validates one split (SPEC §1 layout) into memory.

    Args:
      root: data set folder.
      annotation_file, split_file, feature_dir: paths relative to ``root``.
      subset: the annotation subset every video of the split must belong to.
      modality: 'rgb', 'flow' or 'all' ([rgb, flow] concatenated along features).
      class_names: the C classes, in label-column order.
      feature_dim: expected D of the returned features (the concatenated size for 'all'), or None
        to accept any size that is the same for every video.
      segment_seconds: length of one original segment; the video ends at n * segment_seconds.
      use_duration: end the video at the annotation file's ``duration`` instead (ActivityNet);
        every video then needs one.
      require_labels: True for a training split: every video needs at least one annotation.
      missing: what to do with videos whose feature files do not exist: 'error' (one message
        counting and naming them) or 'skip' (leave them out; named in ``Split.missing``).
        A feature file that exists but is bad is always an error.
      progress: show a tqdm progress bar while reading features.
    Returns:
      A :class:`Split` with V videos: features (n_i, D) float32, labels (V, C).
    """
    if modality not in MODALITIES:
        raise UserError(f'modality {modality!r} is not one of {", ".join(MODALITIES)}')
    if missing not in MISSING_POLICIES:
        raise UserError(f'data.missing {missing!r} is not one of {", ".join(MISSING_POLICIES)}')
    class_names = checked_class_list(class_names)
    class_index = {name: c for c, name in enumerate(class_names)}
    split_path = os.path.join(root, split_file)
    annotation_path = os.path.join(root, annotation_file)
    names = read_split_file(split_path)
    annotations = load_annotations(annotation_path)
    entries = [annotations.get(video) for video in names]
    # Everything that needs only the small text files is checked before the first feature read.
    for video, entry in zip(names, entries):
        _check_entry(video, entry, split_path=split_path, annotation_path=annotation_path,
                     subset=subset, class_index=class_index, require_labels=require_labels)
        if use_duration and entry.duration is None:
            raise UserError(f'{annotation_path}: video {video} has no "duration", but durations '
                            'are asked for (use_duration)')
    paths = [_feature_paths(root, feature_dir, modality, video) for video in names]
    absent = _split_missing(names, paths, missing=missing, split_path=split_path,
                            feature_folder=os.path.join(root, feature_dir))
    skipped = set(absent)
    kept = [v for v, video in enumerate(names) if video not in skipped]
    names = tuple(names[v] for v in kept)
    entries = [entries[v] for v in kept]
    paths = [paths[v] for v in kept]

    from tqdm import tqdm  # only needed here; keeps ``import wtal_jax.data.dataset`` light

    features, gts, num_clipped, num_before_start = [], [], 0, 0
    for video, entry, files in tqdm(list(zip(names, entries, paths)),
                                    desc=f'loading {subset} features', unit='video',
                                    disable=not progress):
        array = _combine_streams(files, [load_feature_array(p) for p in files],
                                 feature_dim, f'video {video}')
        if features and array.shape[1] != features[0].shape[1]:
            raise UserError(f'video {video}: {array.shape[1]} values per segment, but video '
                            f'{names[0]} has {features[0].shape[1]}')
        end = entry.duration if use_duration else array.shape[0] * segment_seconds
        gt, counts = clip_ground_truth(entry, class_index, end)
        features.append(array)
        gts.append(gt)
        num_clipped += counts.after_end
        num_before_start += counts.before_start

    labels = np.zeros((len(names), len(class_names)), np.float32)
    for v, gt in enumerate(gts):
        labels[v, gt.classes] = 1.0
    return Split(
        names=names, features=features, labels=labels,
        durations=np.array([np.nan if e.duration is None else e.duration for e in entries],
                           np.float64),
        num_segments=np.array([f.shape[0] for f in features], np.int64),
        class_names=class_names, num_clipped=num_clipped, num_before_start=num_before_start,
        gt=tuple(gts), missing=absent)

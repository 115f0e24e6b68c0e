"""Loading + validating per-video feature files and splits (SPEC §1); annotations are read by
:mod:`wtal_jax.data.annotations`.

NumPy only (no JAX), so data loading is quick to import and can feed any framework.

Layout read by :func:`load_split`::

    ROOT/ANNOTATION_FILE                   ActivityNet-style JSON ({"database": {VIDEO: ...}})
    ROOT/SPLIT_FILE                        one video id per line
    ROOT/FEATURE_DIR/{rgb,flow}/VIDEO.npy  float32 (num_segments, per-stream size)

Every problem with these files raises :class:`~wtal_jax.errors.UserError` with a one-line message
that names the file or video and the numbers involved.
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

# Re-exported: training code reads annotations and the class list through this module too.
from wtal_jax.data.annotations import (  # noqa: F401
    THUMOS14_CLASSES, VideoAnnotation, class_names_from, load_annotations)
from wtal_jax.data.annotations import checked_class_list as _checked_class_list
from wtal_jax.data.annotations import one_line as _one_line
from wtal_jax.errors import UserError

# 16-frame segments of 25 fps video (THUMOS convention, SPEC §1).
SEGMENT_SECONDS = 16 / 25

MODALITIES = ('rgb', 'flow', 'all')


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
      num_clipped: how many annotations were clipped at the video's end (or start) for ``gt``.
      gt: V :class:`GroundTruth`, instances clipped to the video (for training-time use).
    """
    names: tuple[str, ...]
    features: list[np.ndarray]
    labels: np.ndarray
    durations: np.ndarray
    num_segments: np.ndarray
    class_names: tuple[str, ...]
    num_clipped: int
    gt: tuple[GroundTruth, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def feature_dim(self) -> int:
        """D, the size of one segment's feature vector."""
        return int(self.features[0].shape[1])


# ----------------------------------------------------------------------------------------------
# Feature files


def load_feature_array(path: str) -> np.ndarray:
    """One validated feature file: (n, D) float32 with n >= 1 and only finite values.

    Rejects a missing file, anything that is not a plain numeric ``.npy`` array (pickles, object
    arrays, ``.npz`` archives, text), non-2-D arrays, zero segments and NaN/Inf.
    """
    if not os.path.isfile(path):
        raise UserError(f'{path}: feature file not found')
    try:
        with open(path, 'rb') as f:
            magic = f.read(6)
    except OSError as e:
        raise UserError(f'{path}: cannot read ({_one_line(e.strerror)})') from None
    # Checked first so the message says what the file is, not what np.load tried next.
    if magic.startswith(b'PK'):
        raise UserError(f'{path}: an .npz archive, expected one .npy array')
    if magic != b'\x93NUMPY':
        raise UserError(f'{path}: not a readable .npy array (no NumPy header)')
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f'{path}: not a readable .npy array ({_one_line(e)})') from None
    if array.dtype.kind not in 'fiu':
        raise UserError(f'{path}: dtype {array.dtype}, expected numbers (float32)')
    if array.ndim != 2:
        raise UserError(f'{path}: array of shape {array.shape}, expected (num_segments, size)')
    if array.shape[0] == 0:
        raise UserError(f'{path}: zero segments')
    array = array.astype(np.float32, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise UserError(f'{path}: NaN or Inf at segment {first} of {array.shape[0]}')
    return array


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


def read_split_file(path: str) -> tuple[str, ...]:
    """Video ids of a split file, one per line (blank lines ignored); at least one, no repeats."""
    try:
        with open(path, encoding='utf-8') as f:
            names = tuple(line.strip() for line in f if line.strip())
    except FileNotFoundError:
        raise UserError(f'{path}: split file not found') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: cannot read split file ({_one_line(e)})') from None
    if not names:
        raise UserError(f'{path}: split file lists no videos')
    seen = set()
    for name in names:
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


def clip_ground_truth(entry: VideoAnnotation, class_index: Mapping[str, int],
                      video_end: float) -> tuple[GroundTruth, int]:
    """Instances clipped to [0, video_end] seconds, and how many were changed by the clipping.

    Real annotation files contain instances that end after the video does; for training-time use
    they are cut at the end, counted, and kept (zero-length ones too).
    """
    clipped = np.clip(entry.segments, 0.0, video_end)
    num_changed = int(np.any(clipped != entry.segments, axis=1).sum())
    classes = np.array([class_index[label] for label in entry.labels], np.int64)
    return GroundTruth(segments=clipped, classes=classes), num_changed


def load_split(root: str, *, annotation_file: str, split_file: str, feature_dir: str,
               subset: str, modality: str, class_names: Sequence[str],
               feature_dim: int | None, segment_seconds: float = SEGMENT_SECONDS,
               use_duration: bool = False, require_labels: bool = False,
               progress: bool = False) -> Split:
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
      progress: show a tqdm progress bar while reading features.
    Returns:
      A :class:`Split` with V videos: features (n_i, D) float32, labels (V, C).
    """
    if modality not in MODALITIES:
        raise UserError(f'modality {modality!r} is not one of {", ".join(MODALITIES)}')
    class_names = _checked_class_list(class_names)
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

    from tqdm import tqdm  # only needed here; keeps ``import wtal_jax.data.dataset`` light

    features, gts, num_clipped = [], [], 0
    for video, entry in tqdm(list(zip(names, entries)), desc=f'loading {subset} features',
                             unit='video', disable=not progress):
        paths = _feature_paths(root, feature_dir, modality, video)
        array = _combine_streams(paths, [load_feature_array(p) for p in paths],
                                 feature_dim, f'video {video}')
        if features and array.shape[1] != features[0].shape[1]:
            raise UserError(f'video {video}: {array.shape[1]} values per segment, but video '
                            f'{names[0]} has {features[0].shape[1]}')
        end = entry.duration if use_duration else array.shape[0] * segment_seconds
        gt, changed = clip_ground_truth(entry, class_index, end)
        features.append(array)
        gts.append(gt)
        num_clipped += changed

    labels = np.zeros((len(names), len(class_names)), np.float32)
    for v, gt in enumerate(gts):
        labels[v, gt.classes] = 1.0
    return Split(
        names=names, features=features, labels=labels,
        durations=np.array([np.nan if e.duration is None else e.duration for e in entries],
                           np.float64),
        num_segments=np.array([f.shape[0] for f in features], np.int64),
        class_names=class_names, num_clipped=num_clipped, gt=tuple(gts))

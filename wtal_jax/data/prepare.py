"""A public release into the project's layout: ``wtal-jax prepare thumos14|activitynet``.

Reads an official annotation file and the per-video feature files of a release, and writes::

    OUT/gt.json                               annotations of the chosen subsets (ActivityNet style)
    OUT/split_SUBSET.txt                      videos of SUBSET with features and annotations
    OUT/features/SUBSET/{rgb,flow}/VIDEO.npy  symlinks to the release's files
    OUT/missing_features.txt                  VIDEO<tab>SUBSET<tab>what is missing, one a line
    OUT/prepare.json                          what was prepared from where

Annotations: ActivityNet's ``activity_net.v1-2.min.json`` / ``v1-3.min.json``; THUMOS'14 as a
``gt.json`` of the same format or as the official per-class files ``CLASS_val.txt`` /
``CLASS_test.txt`` (lines ``VIDEO START END``, seconds; ``Ambiguous_*.txt`` is not a class).
THUMOS'14's validation videos are written as subset ``train``, as in the release's gt.json that
``configs/thumos14.py`` reads, and its three excluded test videos are left out (SPEC §1).

Features: any folder tree of ``.npy`` files, one per video and stream. A file's stream is given
by a ``_rgb`` / ``_flow`` suffix or an ``rgb`` / ``flow`` folder on its path; any other file holds
both streams, [rgb, flow] along the features (a joint file). Names may carry the ``v_`` prefix of
ActivityNet releases. Per-stream files are linked, never copied; a joint file has to be split, so
its two halves are written as float32 (n, D/2) files. float16 files are linked as they are and
read as float32 at load time.

The W-TALC single-file release (``NAME-I3D-JOINTFeatures.npy``, an object array of per-video
(n, 2048) arrays, with its ``NAME-Annotations/`` folder of ``.npy`` files) is a pickle: reading it
can run code hidden in the file, so it is read only with ``trust_pickle`` (``--trust-pickle``),
here and nowhere else in the project.

Nothing in the source folders is changed. The output is built in a hidden folder beside OUT and
renamed into place, so OUT is at every moment the earlier output or the new one, whole; a
non-empty OUT is replaced only with ``force`` and only if an earlier ``prepare`` wrote it. One run
at a time writes OUT (a lock file beside it; another run is refused at once), and each run first
cleans up, saying so, what an interrupted one left beside OUT: an unfinished output is removed,
an earlier output that ``--force`` had moved aside is put back if OUT is missing.

One module of ~700 lines on purpose: every public release's format (THUMOS'14's per-class files,
W-TALC's single file, ActivityNet's JSON, per-video or per-stream feature files) ends in the one
layout here, so that training reads one format.
"""

import dataclasses
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from wtal_jax.data.annotations import VideoAnnotation, load_annotations
from wtal_jax.data.dataset import (SEGMENT_SECONDS, Clipped, check_feature_array,
                                   check_feature_header, check_video_id, clip_ground_truth,
                                   load_feature_array, read_npy_header)
from wtal_jax.errors import UserError
from wtal_jax.io_utils import file_problem, hold_lock, read_text

DATASETS = ('thumos14', 'activitynet')
DEFAULT_SUBSETS = {'thumos14': ('train', 'test'), 'activitynet': ('training', 'validation')}
STREAMS = ('rgb', 'flow')
MISSING_FILE = 'missing_features.txt'
MARKER_FILE = 'prepare.json'
# THUMOS'14 test videos the release leaves out (SPEC §1): 270 and 1496 have wrong annotations,
# 1292 has none.
THUMOS14_EXCLUDED = ('video_test_0000270', 'video_test_0001292', 'video_test_0001496')
# Subset names of THUMOS'14 sources → the names of the release's gt.json (configs/thumos14.py).
THUMOS14_SUBSETS = {'validation': 'train', 'val': 'train', 'train': 'train', 'test': 'test'}
_THUMOS14_TXT = re.compile(r'^(?P<label>.+)_(?P<part>val|test)\.txt$')
_WTALC_FIELDS = ('videoname', 'subset', 'segments', 'labels')


class SubsetCount(NamedTuple):
    """What ``prepare`` found for one subset.

    Attributes:
      subset: its name in OUT/gt.json.
      videos: videos of the subset in the annotations.
      with_features: videos with features and annotations, listed in OUT/split_SUBSET.txt.
      missing: videos without (complete) features, listed in OUT/missing_features.txt.
      unlabelled: videos with features but no annotation, left out of the split file.
      clipped: annotations of the split's videos that end after their video; training clips
        them, evaluation uses them as written.
      before_start: annotations of the split's videos that start before 0 s (a negative time,
        a mistake in the file); training clips them at 0, evaluation uses them as written.
    """
    subset: str
    videos: int
    with_features: int
    missing: int
    unlabelled: int
    clipped: int
    before_start: int = 0


@dataclasses.dataclass(frozen=True)
class Summary:
    """The outcome of :func:`prepare`, for :func:`format_summary`.

    Attributes:
      dataset: 'thumos14' or 'activitynet'.
      out: the folder written.
      subsets: one :class:`SubsetCount` per chosen subset.
      stream_sizes: (D_rgb, D_flow) values per segment.
      linked: feature files linked.
      split_joint: joint files (or W-TALC arrays) split into float32 halves, written.
      float16: float16 files linked (read as float32 when loaded).
      renamed: (source subset, subset in OUT/gt.json) pairs that differ.
      excluded: videos left out on purpose (THUMOS'14's excluded test videos).
      unmatched_files: names of feature files that are no video of the chosen subsets.
    """
    dataset: str
    out: str
    subsets: tuple[SubsetCount, ...]
    stream_sizes: tuple[int, int]
    linked: int
    split_joint: int
    float16: int
    renamed: tuple[tuple[str, str], ...]
    excluded: tuple[str, ...]
    unmatched_files: int


class _Video(NamedTuple):
    """One video with features: where they come from, its length and its stream sizes."""
    name: str
    subset: str
    source: tuple[str, ...] | np.ndarray  # (joint path,), (rgb path, flow path), or an array
    num_segments: int
    sizes: tuple[int, int]  # (D_rgb, D_flow)


# ----------------------------------------------------------------------------------------------
# Annotations


def _bounds(values: object, where: str) -> tuple[float, float]:
    """[start, end] seconds as two finite floats with start <= end."""
    try:
        start, end = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f'{where}: segment {values!r}, expected [start, end] seconds') from None
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
        raise UserError(f'{where}: segment [{start}, {end}] is not finite with start <= end')
    return start, end


def _annotation(subset: str, duration: float | None, items: Sequence[tuple[float, float, str]]
                ) -> VideoAnnotation:
    segments = np.array([(s, e) for s, e, _ in items], np.float64).reshape(-1, 2)
    return VideoAnnotation(subset=subset, duration=duration, segments=segments,
                           labels=tuple(label for _, _, label in items))


def read_thumos14_txt(paths: Sequence[str]) -> dict[str, VideoAnnotation]:
    """THUMOS'14's official per-class files (``CLASS_val.txt``, ``CLASS_test.txt``).

    Each line is ``VIDEO START END`` (seconds); ``_val`` files give subset 'validation', ``_test``
    files 'test'. ``Ambiguous_*.txt`` (segments that count for no class) is skipped. Videos come
    sorted by id, as in the release's split files; a video's annotations in file order (files
    sorted by name), then line order.
    """
    items: dict[str, list[tuple[float, float, str]]] = {}
    subsets: dict[str, str] = {}
    for path in sorted(paths, key=os.path.basename):
        match = _THUMOS14_TXT.match(os.path.basename(path))
        if match is None:
            raise UserError(f'{path}: expected a THUMOS\'14 annotation file named CLASS_val.txt '
                            'or CLASS_test.txt')
        label, subset = match['label'], 'validation' if match['part'] == 'val' else 'test'
        if label == 'Ambiguous':
            continue
        lines = read_text(path, what="a THUMOS'14 class file (VIDEO START END per line)"
                          ).splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 3:
                raise UserError(f'{path}: line {number} is {line.strip()!r}, expected '
                                '"VIDEO START END"')
            video = fields[0]
            if subsets.setdefault(video, subset) != subset:
                raise UserError(f'{path}: video {video} is also in the {subsets[video]} files')
            start, end = _bounds(fields[1:], f'{path}: line {number}')
            items.setdefault(video, []).append((start, end, label))
    if not items:
        raise UserError(f'{", ".join(paths)}: no annotations in THUMOS\'14 class files')
    return {video: _annotation(subsets[video], None, items[video]) for video in sorted(items)}


def _text(value: object) -> str:
    """A W-TALC string: bytes (as the release stores them) or str."""
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def read_wtalc(features_file: str, annotation_dir: str, *, trust_pickle: bool
               ) -> tuple[dict[str, VideoAnnotation], dict[str, np.ndarray]]:
    """The W-TALC single-file release: annotations and per-video (n, D) arrays by video name.

    ``features_file`` is an object array of per-video arrays; ``annotation_dir`` holds
    videoname.npy, subset.npy, segments.npy (per video, [start, end] seconds), labels.npy (per
    video, one class name per segment) and optionally duration.npy (seconds, (N,) or (N, 1)).
    All are pickles, read only when ``trust_pickle`` is set.
    """
    header = read_npy_header(features_file)
    if not header.dtype.hasobject:
        raise UserError(f'{features_file}: a plain {header.dtype} array of shape '
                        f'{header.shape}; a single-file release is an object array of per-video '
                        'arrays (give a folder of per-video files instead)')
    if not trust_pickle:
        raise UserError(f'{features_file}: a pickle (the W-TALC single-file release); unpickling '
                        'can run code hidden in the file, so it is read only with --trust-pickle, '
                        'for a file from a source you trust')

    def load(name: str, required: bool = True) -> np.ndarray | None:
        path = os.path.join(annotation_dir, name + '.npy')
        if not os.path.isfile(path):
            if required:
                raise UserError(f'{annotation_dir}: no {name}.npy (a W-TALC -Annotations folder '
                                f'holds {", ".join(f + ".npy" for f in _WTALC_FIELDS)})')
            return None
        try:
            return np.load(path, allow_pickle=True, encoding='bytes')  # trusted: see above
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f'{path}: not a readable .npy file ({" ".join(str(e).split())})'
                            ) from None

    names, subsets, segments, labels = (load(name) for name in _WTALC_FIELDS)
    durations = load('duration', required=False)
    features = np.load(features_file, allow_pickle=True, encoding='bytes')  # trusted: see above
    if durations is not None:
        durations = durations.reshape(len(durations), -1)[:, 0]
    count = len(features)
    for name, array in zip(_WTALC_FIELDS + ('duration',), (names, subsets, segments, labels,
                                                           durations)):
        if array is not None and len(array) != count:
            raise UserError(f'{annotation_dir}: {name}.npy has {len(array)} entries, '
                            f'{features_file} {count} videos')
    annotations, arrays = {}, {}
    for i in range(count):
        video = _text(names[i])
        where = f'{annotation_dir}: video {video}'
        if len(segments[i]) != len(labels[i]):
            raise UserError(f'{where}: {len(segments[i])} segments but {len(labels[i])} labels')
        items = [(*_bounds(seg, where), _text(label)) for seg, label in zip(segments[i], labels[i])]
        duration = None if durations is None else float(durations[i])
        annotations[video] = _annotation(_text(subsets[i]), duration, items)
        arrays[video] = features[i]
    return annotations, arrays


def _bare(video: str) -> str:
    """An ActivityNet id without the ``v_`` that feature releases prefix."""
    return video[2:] if video.startswith('v_') else video


def _check_source(path: str, name: str) -> None:
    """Refuses a source that is missing, or is neither a folder nor a regular file."""
    try:
        problem = file_problem(path)
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})') from None
    if problem == 'file not found':
        raise UserError(f'{path}: {name} not found')
    if problem not in (None, 'is a folder'):
        raise UserError(f'{path}: {problem}; expected a file or a folder')


def _read_sources(dataset: str, annotations: Sequence[str], features: str, trust_pickle: bool
                  ) -> tuple[dict[str, VideoAnnotation], dict[str, np.ndarray] | None, str]:
    """Annotations by video, the W-TALC arrays (None for a folder of files), and a name for them."""
    for path in annotations:
        _check_source(path, 'annotation file')
    _check_source(features, 'feature folder')
    if os.path.isfile(features):
        if len(annotations) != 1 or not os.path.isdir(annotations[0]):
            raise UserError(f'{features}: a single feature file (W-TALC style) needs its '
                            '-Annotations folder as --annotations')
        found, arrays = read_wtalc(features, annotations[0], trust_pickle=trust_pickle)
        if dataset == 'activitynet':  # W-TALC names ActivityNet videos v_ID; the official JSON ID
            found, arrays = ({_bare(v): x for v, x in d.items()} for d in (found, arrays))
        return found, arrays, annotations[0]
    if len(annotations) == 1 and os.path.isfile(annotations[0]) and \
            not annotations[0].endswith('.txt'):
        return load_annotations(annotations[0]), None, annotations[0]
    if dataset != 'thumos14':
        raise UserError(f'{" ".join(annotations)}: expected one annotation file '
                        '(activity_net.v1-2.min.json or v1-3.min.json)')
    files = []
    for path in annotations:
        if os.path.isdir(path):  # the official folders hold one file per class and part
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith('.txt'))
        else:
            files.append(path)
    if not files:
        raise UserError(f'{" ".join(annotations)}: no THUMOS\'14 class files (CLASS_val.txt, '
                        'CLASS_test.txt)')
    return read_thumos14_txt(files), None, ' '.join(annotations)


def _rename_subsets(dataset: str, found: dict[str, VideoAnnotation]
                    ) -> tuple[dict[str, VideoAnnotation], tuple[tuple[str, str], ...]]:
    """THUMOS'14 subsets under the release's names; ActivityNet's as they are."""
    if dataset != 'thumos14':
        return found, ()
    renamed, out = set(), {}
    for video, a in found.items():
        subset = THUMOS14_SUBSETS.get(a.subset.lower(), a.subset)
        if subset != a.subset:
            renamed.add((a.subset, subset))
        out[video] = dataclasses.replace(a, subset=subset)
    return out, tuple(sorted(renamed))


# ----------------------------------------------------------------------------------------------
# Feature files


def _stream(relative: str) -> tuple[str, str]:
    """(name, stream) of a feature file from its path below the feature folder."""
    parts = relative.split(os.sep)
    stem = parts[-1][:-len('.npy')]
    for stream in STREAMS:
        for sep in '_-':
            if stem.lower().endswith(sep + stream):
                return stem[:-len(stream) - 1], stream
    folders = {p.lower() for p in parts[:-1]}
    for stream in STREAMS:
        if stream in folders:
            return stem, stream
    return stem, 'joint'


def index_features(folder: str) -> dict[tuple[str, str], list[str]]:
    """Every ``.npy`` file below ``folder``, by (name, stream): 'rgb', 'flow' or 'joint'."""
    index: dict[tuple[str, str], list[str]] = {}
    for here, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.endswith('.npy'):
                path = os.path.join(here, f)
                index.setdefault(_stream(os.path.relpath(path, folder)), []).append(path)
    if not index:
        raise UserError(f'{folder}: no .npy feature files in this folder or below it')
    return index


def _find(video: str, index: Mapping[tuple[str, str], list[str]]
          ) -> tuple[str | None, dict[str, str]]:
    """The file name under which ``video`` has features (VIDEO or v_VIDEO), and its files."""
    names = [video, 'v_' + video] + ([video[2:]] if video.startswith('v_') else [])
    for name in names:
        found = {s: index[name, s] for s in STREAMS + ('joint',) if (name, s) in index}
        if found:
            for stream, paths in found.items():
                if len(paths) > 1:
                    raise UserError(f'video {video}: {len(paths)} {stream} feature files '
                                    f'({", ".join(paths)}); keep one')
            return name, {s: paths[0] for s, paths in found.items()}
    return None, {}


def _plan_files(video: str, subset: str, files: Mapping[str, str]
                ) -> tuple[_Video | None, str | None]:
    """The planned video, or what is missing; header checks only."""
    if 'joint' in files and (set(files) & set(STREAMS)):
        raise UserError(f'video {video}: both a joint file {files["joint"]} and per-stream files '
                        f'({", ".join(files[s] for s in STREAMS if s in files)}); keep one form')
    if 'joint' in files:
        n, width = check_feature_header(files['joint']).shape
        _check_even(width, files['joint'])
        return _Video(video, subset, (files['joint'],), n, (width // 2,) * 2), None
    absent = [s for s in STREAMS if s not in files]
    if len(absent) == 2:
        return None, 'no feature file'
    if absent:
        return None, f'no {absent[0]} file'
    rgb, flow = (check_feature_header(files[s]).shape for s in STREAMS)
    if rgb[0] != flow[0]:
        raise UserError(f'video {video}: streams differ in length: {files["rgb"]} has '
                        f'{rgb[0]}, {files["flow"]} has {flow[0]} segments')
    return _Video(video, subset, (files['rgb'], files['flow']), rgb[0], (rgb[1], flow[1])), None


def _check_even(width: int, where: str) -> None:
    if width % 2:
        raise UserError(f'{where}: {width} values per segment; a joint [rgb, flow] array needs '
                        'an even number')


def split_joint(array: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A joint (n, 2d) [rgb, flow] array as its two float32 (n, d) halves, validated.

    The first half is taken as rgb, as W-TALC-style releases store it; for modality 'all' the
    order does not matter (the halves are concatenated back in the same order).
    """
    array = check_feature_array(array, where)
    _check_even(array.shape[1], where)
    half = array.shape[1] // 2
    return array[:, :half], array[:, half:]


# ----------------------------------------------------------------------------------------------
# The output folder


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _check_overlap(out: str, sources: Sequence[str]) -> None:
    """Refuses an OUT that overlaps a source: checked before anything is created beside OUT."""
    real_out = os.path.realpath(out)
    for source in sources:
        real = os.path.realpath(source)
        if _inside(real_out, real) or _inside(real, real_out):
            raise UserError(f'{out}: overlaps the source {source}; prepare never writes into '
                            'its sources: choose another folder')


def _check_out(out: str, force: bool) -> None:
    """Refuses an OUT that is a file, or holds other work, or (without force) an earlier
    prepare."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f'{out}: exists and is not a folder')
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, MARKER_FILE)):
            raise UserError(f'{out}: folder is not empty and was not written by prepare (no '
                            f'{MARKER_FILE}); choose an empty folder')
        if not force:
            raise UserError(f'{out}: holds an earlier prepare; pass --force to replace it')


def _hidden(out: str, suffix: str) -> str:
    """``.NAME.prepare-SUFFIX`` beside OUT (NAME its last part): where a run builds its output
    (SUFFIX eight random hex digits), keeps the earlier one during --force (the same, plus
    ``.old``) and holds its lock (SUFFIX 'lock')."""
    parent, name = os.path.split(os.path.abspath(out))
    return os.path.join(parent, f'.{name}.prepare-{suffix}')


def _recover(out: str) -> list[str]:
    """Cleans up what interrupted runs into OUT left beside it; returns what it did, a line each.

    Called with the lock held, so no other run is writing these. An unfinished output is
    removed. An earlier output that a --force run had moved aside goes back to OUT if OUT is
    absent or empty (the run stopped between its two renames), and is removed otherwise (the new
    output was in place).
    """
    parent, name = os.path.split(os.path.abspath(out))
    leftover = re.compile(rf'\.{re.escape(name)}\.prepare-[0-9a-f]{{8}}(\.old)?')
    done = []
    for entry in sorted(os.scandir(parent), key=lambda e: e.name):
        match = leftover.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        vacant = not os.path.lexists(out) or (os.path.isdir(out) and not os.listdir(out))
        if match[1] and vacant:
            os.rename(entry.path, out)
            done.append(f'restored {out} from {entry.path}, where an interrupted prepare --force '
                        'had moved it')
        else:
            shutil.rmtree(entry.path)  # symlinks and written halves only: never follows links
            what = ('the earlier output that an interrupted prepare --force had replaced'
                    if match[1] else 'the unfinished output of an interrupted prepare')
            done.append(f'removed {entry.path}, {what}')
    return done


def _write_text(path: str, lines: Sequence[str]) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))


def _annotation_json(a: VideoAnnotation) -> dict:
    entry = {'subset': a.subset}
    if a.duration is not None:
        entry['duration'] = a.duration
    entry['annotations'] = [{'segment': [float(s), float(e)], 'label': label}
                            for (s, e), label in zip(a.segments, a.labels)]
    return entry


def _write_features(root: str, v: _Video) -> tuple[bool, int]:
    """Links or writes one video's rgb and flow files; returns (split a joint, float16 links)."""
    targets = [os.path.join(root, 'features', v.subset, s, v.name + '.npy') for s in STREAMS]
    if isinstance(v.source, np.ndarray) or len(v.source) == 1:
        array = v.source if isinstance(v.source, np.ndarray) else load_feature_array(v.source[0])
        where = f'video {v.name}' if isinstance(v.source, np.ndarray) else v.source[0]
        for target, half in zip(targets, split_joint(array, where)):
            np.save(target, half)
        return True, 0
    float16 = 0
    for target, source in zip(targets, v.source):
        float16 += check_feature_header(source).dtype == np.float16
        try:
            os.symlink(os.path.abspath(source), target)
        except OSError as e:
            raise UserError(f'{target}: cannot link to {source} ({" ".join(str(e).split())})'
                            ) from None
    return False, float16


def _replace(out: str, built: str, force: bool) -> None:
    """Moves the finished folder ``built`` to ``out``, so that ``out`` is at every moment the
    earlier output or the new one, whole.

    A rename onto an absent or empty ``out`` is the check and the move at once: one that fails
    because ``out`` filled meanwhile replaces nothing. With ``force``, the earlier prepare goes
    aside under a hidden name first and is removed last; should the run stop between the two
    renames, the next run finds it there and puts it back (:func:`_recover`).
    """
    try:
        os.rename(built, out)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
    _check_out(out, force)  # filled since the first check: by another program, not a prepare
    old = f'{built}.old'
    os.rename(out, old)
    try:
        os.rename(built, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old)  # symlinks and written halves only: rmtree never follows links


# ----------------------------------------------------------------------------------------------
# prepare


def _plan(dataset: str, chosen: Mapping[str, VideoAnnotation], annotation_name: str,
          index: Mapping | None, arrays: Mapping[str, np.ndarray] | None
          ) -> tuple[list[_Video], list[tuple[str, str, str]], set[str]]:
    """Videos with features, missing videos (video, subset, what), and the file names used."""
    planned, missing, used = [], [], set()
    for video, a in chosen.items():
        check_video_id(video, annotation_name)
        if arrays is not None:
            if video in arrays:
                array = check_feature_array(np.asarray(arrays[video]), f'video {video}')
                _check_even(array.shape[1], f'video {video}')
                planned.append(_Video(video, a.subset, array, array.shape[0],
                                      (array.shape[1] // 2,) * 2))
            else:
                missing.append((video, a.subset, 'no feature array'))
            continue
        name, files = _find(video, index)
        used.add(name)
        v, what = _plan_files(video, a.subset, files)
        if v is None:
            missing.append((video, a.subset, what))
        else:
            planned.append(v)
    return planned, missing, used


def _count_clipped(dataset: str, v: _Video, a: VideoAnnotation) -> Clipped:
    """Annotations of ``v`` outside [0, video end]: the end by duration (ActivityNet) or length."""
    if dataset == 'activitynet':
        if a.duration is None:
            raise UserError(f'video {v.name}: no duration in the annotations; ActivityNet '
                            'configs place segments by duration')
        end = a.duration
    else:
        end = v.num_segments * SEGMENT_SECONDS
    index = {label: c for c, label in enumerate(sorted(set(a.labels)))}
    return clip_ground_truth(a, index, end)[1]


def prepare(dataset: str, *, annotations: Sequence[str], features: str, out: str,
            subsets: Sequence[str] | None = None, force: bool = False,
            trust_pickle: bool = False, progress: bool = False) -> Summary:
    """Writes the layout of ``dataset`` into ``out`` (module docstring); returns a Summary.

    Args:
      dataset: 'thumos14' or 'activitynet'.
      annotations: one annotation file; for THUMOS'14 also class files or folders of them; for a
        W-TALC single-file release its -Annotations folder.
      features: a folder of per-video feature files, or a W-TALC single file.
      out: folder to write; empty or absent, or an earlier prepare with ``force``.
      subsets: subsets to prepare (names after renaming); default DEFAULT_SUBSETS[dataset].
      force: replace an earlier prepare in ``out``.
      trust_pickle: allow reading a W-TALC single file (a pickle).
      progress: show a tqdm progress bar while linking and writing feature files.
    """
    if dataset not in DATASETS:
        raise UserError(f'data set {dataset!r} is not one of {", ".join(DATASETS)}')
    annotations = list(annotations)
    _check_overlap(out, annotations + [features])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # One run at a time into OUT: checking OUT, building, and replacing it are one step for
    # any other run, which is refused at once rather than replacing this one's output.
    with hold_lock(_hidden(out, 'lock'), busy=f'{out}: another prepare is writing it; wait for '
                   'it to finish, or choose another folder'):
        for line in _recover(out):
            print(f'note: {line}', file=sys.stderr, flush=True)
        _check_out(out, force)
        return _prepare(dataset, annotations, features, out, subsets, force, trust_pickle,
                        progress)


def _prepare(dataset: str, annotations: list[str], features: str, out: str,
             subsets: Sequence[str] | None, force: bool, trust_pickle: bool, progress: bool
             ) -> Summary:
    """:func:`prepare` once OUT is checked and locked."""
    found, arrays, annotation_name = _read_sources(dataset, annotations, features, trust_pickle)
    found, renamed = _rename_subsets(dataset, found)
    excluded = tuple(v for v in THUMOS14_EXCLUDED if v in found) if dataset == 'thumos14' else ()
    subsets = tuple(subsets or DEFAULT_SUBSETS[dataset])
    present = sorted({a.subset for a in found.values()})
    for subset in subsets:
        videos = [a for v, a in found.items() if a.subset == subset and v not in excluded]
        if not videos:
            raise UserError(f'{annotation_name}: no videos in subset {subset!r} (subsets there: '
                            f'{", ".join(present)}; choose with --subsets)')
        if not any(a.labels for a in videos):
            raise UserError(f'{annotation_name}: subset {subset!r} has no annotations, so nothing '
                            'to train or evaluate on; choose others with --subsets')
    chosen = {v: a for v, a in found.items() if a.subset in subsets and v not in excluded}
    index = None if arrays is not None else index_features(features)
    planned, missing, used = _plan(dataset, chosen, annotation_name, index, arrays)

    counts = []
    for subset in subsets:
        mine = [v for v in planned if v.subset == subset]
        labelled = [v for v in mine if chosen[v.name].labels]
        if not labelled:
            example = next(v for v, a in chosen.items() if a.subset == subset and a.labels)
            raise UserError(f'{features}: no features for any annotated video of subset '
                            f'{subset!r} (looked for {example}.npy or v_{example}.npy, per stream '
                            'with _rgb/_flow or in rgb/flow folders)')
        clipped = [_count_clipped(dataset, v, chosen[v.name]) for v in labelled]
        counts.append(SubsetCount(
            subset=subset, videos=sum(a.subset == subset for a in chosen.values()),
            with_features=len(labelled), missing=sum(m[1] == subset for m in missing),
            unlabelled=len(mine) - len(labelled), clipped=sum(c.after_end for c in clipped),
            before_start=sum(c.before_start for c in clipped)))
    first = planned[0]
    for v in planned:
        if v.sizes != first.sizes:
            raise UserError(f'video {v.name}: {v.sizes[0]} + {v.sizes[1]} values per segment, but '
                            f'video {first.name} has {first.sizes[0]} + {first.sizes[1]}')

    built = _hidden(out, secrets.token_hex(4))
    os.mkdir(built)  # with the user's umask, unlike mkdtemp's 0700
    try:
        with open(os.path.join(built, 'gt.json'), 'w', encoding='utf-8') as f:
            json.dump({'database': {v: _annotation_json(a) for v, a in chosen.items()}}, f)
        for subset in subsets:
            for stream in STREAMS:
                os.makedirs(os.path.join(built, 'features', subset, stream))
            _write_text(os.path.join(built, f'split_{subset}.txt'),
                        [v.name for v in planned if v.subset == subset and chosen[v.name].labels])
        _write_text(os.path.join(built, MISSING_FILE), ['\t'.join(m) for m in missing])
        from tqdm import tqdm  # only needed here
        split = float16 = 0
        for v in tqdm(planned, desc='features', unit='video', disable=not progress):
            was_split, was_float16 = _write_features(built, v)
            split, float16 = split + was_split, float16 + was_float16
        with open(os.path.join(built, MARKER_FILE), 'w', encoding='utf-8') as f:
            json.dump({'dataset': dataset, 'annotations': [os.path.abspath(a) for a in annotations],
                       'features': os.path.abspath(features), 'subsets': list(subsets)}, f,
                      indent=1)
        _replace(out, built, force)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    unmatched = 0 if index is None else len({name for name, _ in index} - used)
    return Summary(dataset=dataset, out=out, subsets=tuple(counts), stream_sizes=first.sizes,
                   linked=2 * (len(planned) - split), split_joint=split, float16=float16,
                   renamed=renamed, excluded=excluded, unmatched_files=unmatched)


def format_summary(s: Summary) -> str:
    """The one summary ``wtal-jax prepare`` prints: a table per subset and what was done."""
    rows = [('subset', 'videos', 'with features', 'missing', 'no annotations', 'clipped')]
    rows += [tuple(str(x) for x in c) for c in s.subsets]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ['  '.join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(r, widths))) for r in rows]
    lines = [f'prepared {s.dataset} in {s.out}: features {s.stream_sizes[0]} (rgb) + '
             f'{s.stream_sizes[1]} (flow) per segment'] + table
    missing = sum(c.missing for c in s.subsets)
    lines.append(f'missing: {missing} videos without features, listed in '
                 f'{os.path.join(s.out, MISSING_FILE)}' if missing else
                 'missing: none')
    done = [f'{s.linked} files linked (not copied)'] if s.linked else []
    if s.split_joint:
        done.append(f'{s.split_joint} joint [rgb, flow] arrays split and written as float32 '
                    'halves')
    if s.float16:
        done.append(f'{s.float16} float16 files linked as they are (read as float32)')
    if s.unmatched_files:
        done.append(f'features of {s.unmatched_files} other videos (not in these subsets) '
                    'ignored')
    lines.append('; '.join(done))
    if s.renamed:
        lines.append('subsets renamed as the release gt.json names them: ' +
                     ', '.join(f'{a} -> {b}' for a, b in s.renamed))
    if s.excluded:
        lines.append(f'left out as in the release: {", ".join(s.excluded)}')
    lines.append('clipped: annotations ending after their video; training clips them, evaluation '
                 'uses them as written')
    before = ', '.join(f'{c.before_start} of {c.subset}' for c in s.subsets if c.before_start)
    if before:
        lines.append(f'start before 0 s: {before} annotations (negative times, a mistake in the '
                     'annotation file); training clips them at 0, evaluation uses them as '
                     'written')
    return '\n'.join(lines)

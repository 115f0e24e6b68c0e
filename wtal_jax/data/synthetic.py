"""A small synthetic data set in exactly the THUMOS'14 layout of SPEC §1, for tests and demos.

NumPy only. The features are built to exercise the paper's premise, so that a model trained on
video-level labels alone can localise the actions, but not trivially:

* features are non-negative, like average-pooled I3D features after a ReLU;
* action segments carry a class-specific pattern in both streams and have a larger magnitude;
* background is inconsistent: each video cycles through a few of several background "modes"
  (prototypes) that differ across videos; a class's typical scene (its context mode) appears
  in most of its videos and carries a faint trace of the class pattern;
* "dynamic" background (strong generic motion in the flow stream, no class pattern) often sits
  right next to actions and sometimes elsewhere, so magnitude alone is not a perfect detector;
* most videos have one class, some two; several instances per video of 2-40 segments, about
  30% of segments are action; temporally correlated noise on top.

Writing is detected as complete only by the ``.complete`` marker (JSON with the parameters),
written last; :func:`ensure` regenerates an interrupted set and refuses a different one.
"""

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from wtal_jax.data.dataset import SEGMENT_SECONDS
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic

# Subset names as in the real THUMOS'14 gt.json, so one config reads both.
TRAIN_SUBSET = 'train'
TEST_SUBSET = 'test'
COMPLETE_MARKER = '.complete'
IN_PROGRESS_MARKER = '.in_progress'
# Bump when the generator changes, so ensure() does not take an old set for a new one.
GENERATOR_VERSION = 1
_OUTPUTS = ('gt.json', 'split_train.txt', 'split_test.txt', 'features')

# Difficulty knobs (chosen so a small UM model learns the set in ~1,000 steps, but not perfectly).
CLASS_LEVEL = (0.3, 0.6)  # range of the active entries of a class pattern
NOISE = 0.6  # standard deviation of the per-segment noise, before the ReLU
CONTEXT_MIX = 0.35  # how much of its class pattern a class's usual scene carries
INSTANCE_JITTER = 0.4  # log-normal spread of a class pattern between instances
ACTION_ENERGY = 0.5  # scale of the pattern every action shares (larger magnitude, no class)

DEFAULTS = dict(num_classes=5, class_names=None, num_train=200, num_test=100, feature_dim=64,
                min_segments=40, max_segments=200, seed=0)


# ----------------------------------------------------------------------------------------------
# The generative model


def _sparse_pattern(rng: np.random.Generator, dim: int, active: int, low: float,
                    high: float) -> np.ndarray:
    """(dim,) vector with ``active`` random entries in [low, high), the rest 0."""
    pattern = np.zeros(dim)
    pattern[rng.choice(dim, active, replace=False)] = rng.uniform(low, high, active)
    return pattern


def prototypes(seed: int, num_classes: int, dim: int) -> dict[str, np.ndarray]:
    """Data-set-wide patterns, each stream of size ``dim`` (shared with synthetic_activitynet).

    Returns class_rgb/class_flow (C, dim), bg_rgb/bg_flow (K, dim), context (C,) int (each class's
    usual background mode), motion (dim,).
    """
    rng = np.random.default_rng([seed, 0])
    num_modes = max(8, num_classes + 3)
    active = max(2, dim // 4)
    class_rgb = np.stack([_sparse_pattern(rng, dim, active, *CLASS_LEVEL)
                          for _ in range(num_classes)])
    class_flow = np.stack([_sparse_pattern(rng, dim, active, *CLASS_LEVEL)
                           for _ in range(num_classes)])
    # Modes differ in overall level, so some background is as bright as a weak action.
    level = rng.uniform(0.5, 1.6, (num_modes, 1))
    bg_rgb = np.abs(rng.normal(0, 0.5, (num_modes, dim))) * level
    bg_flow = np.abs(rng.normal(0, 0.3, (num_modes, dim))) * level
    context = rng.choice(num_modes, num_classes, replace=num_classes > num_modes)
    # A class's scene looks a little like the class: the context confusion of real videos.
    bg_rgb[context] += CONTEXT_MIX * class_rgb
    motion = _sparse_pattern(rng, dim, dim // 2, 0.8, 2.0)
    energy_rgb, energy_flow = np.abs(rng.normal(0, ACTION_ENERGY, (2, dim)))
    return dict(class_rgb=class_rgb, class_flow=class_flow, bg_rgb=bg_rgb, bg_flow=bg_flow,
                context=context, motion=motion, energy_rgb=energy_rgb, energy_flow=energy_flow)


def _instances(rng: np.random.Generator, n: int,
               classes: np.ndarray) -> list[tuple[int, int, int]]:
    """Non-overlapping action instances (start, length, class) in n segments, sorted by start.

    Lengths are log-uniform in [2, 40], drawn until 10-40% of the video is action (about 30% on
    average, overshoot included); every class of ``classes`` gets at least one instance;
    instances are at least one segment apart.
    """
    target = rng.uniform(0.1, 0.4) * n
    lengths = []
    while sum(lengths) < target or len(lengths) < len(classes):
        lengths.append(int(round(np.exp(rng.uniform(np.log(2), np.log(40))))))
    lengths = np.minimum(lengths, max(2, n // 3))
    # Drop the last instances while they do not fit with one-segment gaps between them.
    while len(lengths) > len(classes) and lengths.sum() + len(lengths) - 1 > n:
        lengths = lengths[:-1]
    free = n - lengths.sum() - (len(lengths) - 1)
    if free < 0:
        raise ValueError(f'{n} segments are too few for {len(classes)} classes')
    cuts = np.sort(rng.integers(0, free + 1, len(lengths)))
    gaps = np.diff(np.concatenate([[0], cuts]))  # free segments before each instance
    starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
    labels = np.concatenate([rng.permutation(classes),
                             rng.choice(classes, len(lengths) - len(classes))])
    labels = labels[rng.permutation(len(lengths))]
    return [(int(s), int(l), int(c)) for s, l, c in zip(starts, lengths, labels)]


def _mode_timeline(rng: np.random.Generator, n: int, pool: np.ndarray) -> np.ndarray:
    """(n,) background mode per segment: runs of ~25 segments, each a random mode of ``pool``."""
    change = rng.random(n) < 1 / 25
    change[0] = True
    run = np.cumsum(change) - 1
    return rng.choice(pool, run[-1] + 1)[run]


def _smooth_noise(rng: np.random.Generator, n: int, dim: int, scale: float) -> np.ndarray:
    """(n, dim) Gaussian noise, correlated between neighbours (I3D receptive fields overlap)."""
    white = rng.normal(0, 1, (n + 2, dim))
    return scale * (white[:-2] + 2 * white[1:-1] + white[2:]) / np.sqrt(6)


def _video_classes(rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """The classes of one video: one, or two distinct ones in a fifth of the videos."""
    two = num_classes > 1 and rng.random() < 0.2
    return rng.choice(num_classes, 2 if two else 1, replace=False)


def _video(rng: np.random.Generator, protos: dict[str, np.ndarray], n: int, num_classes: int
           ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """One video: rgb and flow (n, dim) float32 >= 0, and its instances (start, len, class)."""
    classes = _video_classes(rng, num_classes)
    instances = _instances(rng, n, classes)
    rgb, flow = render_video(rng, protos, n, classes, instances)
    return rgb, flow, instances


def render_video(rng: np.random.Generator, protos: dict[str, np.ndarray], n: int,
                 classes: np.ndarray, instances: Sequence[tuple[int, int, int]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Features of one video with the given instances (start, length, class), in n segments.

    ``classes`` are the video's classes (their usual scenes join its background). Returns rgb
    and flow, each (n, dim) float32 >= 0, dim from ``protos``.
    """
    dim = protos['motion'].shape[0]

    evidence_rgb = np.zeros((n, dim))  # class evidence per segment
    evidence_flow = np.zeros((n, dim))
    in_action = np.zeros(n, bool)
    dynamic = np.zeros(n)  # generic motion without class evidence
    for start, length, c in instances:
        # Each instance shows its class a little differently, and unevenly over time.
        level = rng.uniform(0.6, 1.4) * np.clip(1 + 0.3 * rng.normal(size=length), 0.3, None)
        if length >= 3:  # boundary segments only partly overlap the action
            level[[0, -1]] *= 0.5
        for evidence, pattern, energy in (
                (evidence_rgb, protos['class_rgb'][c], protos['energy_rgb']),
                (evidence_flow, protos['class_flow'][c], protos['energy_flow'])):
            variant = pattern * np.exp(INSTANCE_JITTER * rng.normal(size=dim)) + energy
            evidence[start:start + length] = level[:, None] * variant
        in_action[start:start + length] = True
        if rng.random() < 0.6:  # run-up or aftermath with strong motion
            width = rng.integers(1, 7)
            at = start - width if rng.random() < 0.5 else start + length
            dynamic[max(at, 0):max(at + width, 0)] = rng.uniform(0.8, 1.5)
    if rng.random() < 0.5:  # camera motion somewhere, unrelated to any action
        width = rng.integers(2, 9)
        at = rng.integers(0, max(1, n - width))
        dynamic[at:at + width] = rng.uniform(0.8, 1.5)
    dynamic[in_action] = 0

    num_modes = len(protos['bg_rgb'])
    pool = rng.choice(num_modes, rng.integers(2, 4), replace=False)
    for c in classes:
        if rng.random() < 0.7:
            pool = np.append(pool, protos['context'][c])
    mode = _mode_timeline(rng, n, pool)

    gain = rng.uniform(0.7, 1.3)  # per-video brightness / camera differences
    offset = np.abs(rng.normal(0, 0.15, dim))
    scene = 1 - 0.4 * in_action[:, None]  # the actor hides part of the scene
    rgb = gain * (protos['bg_rgb'][mode] * scene + evidence_rgb) + offset
    flow = gain * (protos['bg_flow'][mode] + evidence_flow + dynamic[:, None] * protos['motion'])
    rgb = np.maximum(rgb + _smooth_noise(rng, n, dim, NOISE), 0).astype(np.float32)
    flow = np.maximum(flow + _smooth_noise(rng, n, dim, NOISE), 0).astype(np.float32)
    return rgb, flow


def _annotations(rng: np.random.Generator, instances: list[tuple[int, int, int]],
                 class_names: Sequence[str]) -> list[dict[str, Any]]:
    """gt.json entries: bounds in seconds as one-decimal strings, like the real file.

    Bounds are jittered by up to a third of a segment, as human annotation is; an instance at the
    very end can therefore end after the video does, as in the real file.
    """
    items = []
    for start, length, c in instances:
        begin = max(0.0, (start + rng.uniform(-0.3, 0.3)) * SEGMENT_SECONDS)
        end = (start + length + rng.uniform(-0.3, 0.3)) * SEGMENT_SECONDS
        items.append({'segment': [f'{begin:.1f}', f'{end:.1f}'], 'label': class_names[c]})
    return items


def annotations(lengths: Sequence[int], class_names: Sequence[str], *,
                seed: int = 0) -> list[list[dict[str, Any]]]:
    """gt.json annotation lists for videos of the given lengths (segments), drawn as
    :func:`generate` draws them (one or two classes a video, 10-40% action), without features.

    For benchmarks that need realistic ground truth at lengths of their own choosing; video
    ``i`` depends only on ``seed``, ``i``, its length and the number of classes.
    """
    items = []
    for i, n in enumerate(lengths):
        rng = np.random.default_rng([seed, 3, i])  # streams 1 and 2 are generate()'s splits
        instances = _instances(rng, int(n), _video_classes(rng, len(class_names)))
        items.append(_annotations(rng, instances, class_names))
    return items


# ----------------------------------------------------------------------------------------------
# Writing


def _params(**given: Any) -> dict[str, Any]:
    """All generation parameters, defaults filled in and checked; what the marker records."""
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise UserError(f'unknown synthetic data parameter(s): {", ".join(sorted(unknown))}')
    p = {**DEFAULTS, **given}
    if p['class_names'] is None:
        p['class_names'] = [f'Class{c:02d}' for c in range(p['num_classes'])]
    p['class_names'] = [str(name) for name in p['class_names']]
    if len(p['class_names']) != p['num_classes']:
        # Given names decide the number of classes unless num_classes was given too.
        if 'num_classes' in given:
            raise UserError(f'{len(p["class_names"])} class names for num_classes '
                            f'{p["num_classes"]}')
        p['num_classes'] = len(p['class_names'])
    if len(set(p['class_names'])) != len(p['class_names']) or p['num_classes'] < 1:
        raise UserError(f'class names must be distinct and at least one: {p["class_names"]}')
    if min(p['num_train'], p['num_test']) < 1 or p['feature_dim'] < 4:
        raise UserError(f'need num_train, num_test >= 1 and feature_dim >= 4, got '
                        f'{p["num_train"]}, {p["num_test"]}, {p["feature_dim"]}')
    if not 5 <= p['min_segments'] <= p['max_segments']:  # room for two instances and a gap
        raise UserError(f'need 5 <= min_segments <= max_segments, got {p["min_segments"]} and '
                        f'{p["max_segments"]}')
    if p['seed'] < 0:
        raise UserError(f'seed must be non-negative, got {p["seed"]}')
    return p


def _marker(params: dict[str, Any]) -> dict[str, Any]:
    return {'generator': 'wtal_jax.data.synthetic', 'version': GENERATOR_VERSION, 'params': params}


def _read_marker(root: str) -> dict[str, Any] | None:
    path = os.path.join(root, COMPLETE_MARKER)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable synthetic data marker ({e})') from None


def _clear(root: str) -> None:
    """Removes a previous synthetic set from ``root``; refuses a folder that is not one."""
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise UserError(f'{root}: exists and is not a folder')
        return
    ours = any(os.path.exists(os.path.join(root, m)) for m in (COMPLETE_MARKER, IN_PROGRESS_MARKER))
    if os.listdir(root) and not ours:
        raise UserError(f'{root}: folder is not empty and holds no synthetic data set; '
                        'choose another folder')
    for name in (COMPLETE_MARKER,) + _OUTPUTS:  # the marker first: the old set is gone from then on
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def _video_names(prefix: str, count: int) -> list[str]:
    """Ids shaped like THUMOS'14's: video_validation_0000001, video_test_0000001, ..."""
    return [f'video_{prefix}_{i + 1:07d}' for i in range(count)]


def generate(root: str, *, progress: bool = False, **params: Any) -> dict[str, Any]:
    """Writes a synthetic data set to ``root`` (SPEC §1 layout), replacing an earlier one there.

    Keyword parameters, defaults in ``DEFAULTS``:
      num_classes, class_names: the classes (names default to 'Class00', 'Class01', ...);
      num_train, num_test: videos per split;
      feature_dim: size of each stream (D = 2 * feature_dim for modality 'all');
      min_segments, max_segments: inclusive range of video lengths, in segments;
      seed: the same parameters give byte-identical files.
    Returns the parameters used (as recorded in the ``.complete`` marker).
    """
    p = _params(**params)
    _clear(root)
    os.makedirs(root, exist_ok=True)
    write_json_atomic(os.path.join(root, IN_PROGRESS_MARKER), _marker(p))
    protos = prototypes(p['seed'], p['num_classes'], p['feature_dim'])

    from tqdm import tqdm  # only needed here

    database = {}
    splits = [('train', TRAIN_SUBSET, _video_names('validation', p['num_train'])),
              ('test', TEST_SUBSET, _video_names('test', p['num_test']))]
    for code, (split, subset, names) in enumerate(splits):
        for stream in ('rgb', 'flow'):
            os.makedirs(os.path.join(root, 'features', split, stream), exist_ok=True)
        for i, name in enumerate(tqdm(names, desc=f'synthetic {split}', unit='video',
                                      disable=not progress)):
            rng = np.random.default_rng([p['seed'], code + 1, i])
            n = int(rng.integers(p['min_segments'], p['max_segments'], endpoint=True))
            rgb, flow, instances = _video(rng, protos, n, p['num_classes'])
            np.save(os.path.join(root, 'features', split, 'rgb', name + '.npy'), rgb)
            np.save(os.path.join(root, 'features', split, 'flow', name + '.npy'), flow)
            database[name] = {'subset': subset,
                              'annotations': _annotations(rng, instances, p['class_names'])}
        with open(os.path.join(root, f'split_{split}.txt'), 'w', encoding='utf-8') as f:
            f.write(''.join(name + '\n' for name in names))
    write_json_atomic(os.path.join(root, 'gt.json'), {'database': database})
    # Last: only now does the folder count as a complete data set.
    write_json_atomic(os.path.join(root, COMPLETE_MARKER), _marker(p), indent=1)
    os.unlink(os.path.join(root, IN_PROGRESS_MARKER))
    return p


def ensure(root: str, *, progress: bool = False, **params: Any) -> dict[str, Any]:
    """Makes sure ``root`` holds the synthetic set of ``params``: generates it only if needed.

    Does nothing when the ``.complete`` marker records the same parameters; regenerates a set
    whose writing was interrupted; raises UserError when a different set (or other data) is there.
    Returns the parameters.
    """
    p = _params(**params)
    marker = _read_marker(root)
    if marker is None:
        return generate(root, progress=progress, **p)
    if marker != _marker(p):
        old = marker.get('params', {}) if isinstance(marker, dict) else {}
        diff = [f'{k}={old.get(k)!r} there, {v!r} asked' for k, v in p.items() if old.get(k) != v]
        if marker.get('version') != GENERATOR_VERSION:
            diff.append(f'generator version {marker.get("version")!r} there, '
                        f'{GENERATOR_VERSION} now')
        raise UserError(f'{root}: holds a different synthetic data set ({"; ".join(diff)}); '
                        'remove it or choose another folder')
    return p

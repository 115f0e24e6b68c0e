"""A small ActivityNet-shaped data set as the public releases ship it: the input of ``prepare``.

NumPy only. Written into an empty folder OUT::

    OUT/activity_net.v1-3.min.json     the official annotation format (below)
    OUT/features/v_ID.npy              one joint [rgb, flow] file per video   (layout 'joint')
    OUT/features/{rgb,flow}/v_ID.npy   or one file per stream                  (layout 'separate')

The annotation file has the official shape: ``{"version", "taxonomy", "database": {ID: {"subset":
"training" | "validation" | "testing", "duration": seconds, "resolution", "url", "annotations":
[{"segment": [start, end], "label": name}]}}}``, with bare YouTube-like ids as keys.

What makes it ActivityNet-like, where :mod:`wtal_jax.data.synthetic` is THUMOS-like: feature files
named ``v_ID.npy`` against bare ids; a duration per video at 16 frames per segment of 24-30 fps
video; one class per video with one to three instances, long ones that often cover more than 76%
of the video (so a background fraction of 1/4, THUMOS'14's k_bkg, would fall inside the action);
class names with spaces and commas; about 3% of the training and validation videos without
features; a testing subset without annotations. The features themselves come from the generative
model of :mod:`wtal_jax.data.synthetic` (:func:`~wtal_jax.data.synthetic.render_video`).
"""

import os
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from wtal_jax.data import synthetic
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic

ANNOTATION_FILE = 'activity_net.v1-3.min.json'
FEATURE_DIR = 'features'
SUBSETS = ('training', 'validation', 'testing')
LAYOUTS = ('joint', 'separate')
DTYPES = ('float32', 'float16')
# Names with spaces and commas, as a comma-list parser would mangle them.
CLASS_NAMES = ('Rock, paper, scissors', 'Playing beach volleyball', 'Knitting',
               'Walking the dog', 'Snow, ice and sand sculpting', 'Cleaning windows',
               'Making a sandwich', 'Tai chi')
FRAME_RATES = (24.0, 25.0, 29.97, 30.0)  # of YouTube videos; one segment is 16 frames
LONG_FRACTION = 0.45  # of the videos whose single action covers 76-100% of it
_ID_ALPHABET = string.ascii_letters + string.digits + '-_'

DEFAULTS = dict(num_classes=5, num_training=40, num_validation=20, num_testing=4,
                feature_dim=16, min_segments=20, max_segments=120, missing_fraction=0.03,
                layout='joint', dtype='float32', seed=0)


def _params(**given: Any) -> dict[str, Any]:
    """All generation parameters, defaults filled in and checked."""
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise UserError(f'unknown ActivityNet-shaped data parameter(s): '
                        f'{", ".join(sorted(unknown))}')
    p = {**DEFAULTS, **given}
    if p['layout'] not in LAYOUTS or p['dtype'] not in DTYPES:
        raise UserError(f'layout {p["layout"]!r} / dtype {p["dtype"]!r}: expected one of '
                        f'{", ".join(LAYOUTS)} / {", ".join(DTYPES)}')
    if min(p['num_classes'], p['num_training'], p['num_validation']) < 1 or p['num_testing'] < 0:
        raise UserError('need at least one class, one training and one validation video')
    if not 10 <= p['min_segments'] <= p['max_segments'] or p['feature_dim'] < 4:
        raise UserError(f'need 10 <= min_segments <= max_segments and feature_dim >= 4, got '
                        f'{p["min_segments"]}, {p["max_segments"]}, {p["feature_dim"]}')
    if not 0 <= p['missing_fraction'] < 1:
        raise UserError(f'missing_fraction {p["missing_fraction"]} is not in [0, 1)')
    return p


def class_names(num_classes: int) -> tuple[str, ...]:
    """The first ``num_classes`` of :data:`CLASS_NAMES`, then 'Activity 8, take 8', ..."""
    extra = [f'Activity {c}, take {c}' for c in range(len(CLASS_NAMES), num_classes)]
    return (CLASS_NAMES + tuple(extra))[:num_classes]


def youtube_ids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct 11-character ids of YouTube's alphabet (letters, digits, '-', '_')."""
    ids: dict[str, None] = {}
    while len(ids) < count:
        ids[''.join(rng.choice(list(_ID_ALPHABET), 11))] = None
    return list(ids)


def long_instances(rng: np.random.Generator, n: int, label: int) -> list[tuple[int, int, int]]:
    """Instances (start, length, class) of one class in n segments, sorted, one segment apart.

    With probability :data:`LONG_FRACTION` one instance covers 76-100% of the video; otherwise
    one to three instances cover 10-45% of it each (as much as fits).
    """
    if rng.random() < LONG_FRACTION:
        length = min(n, int(np.ceil(rng.uniform(0.76, 1.0) * n)))
        start = int(rng.integers(0, n - length, endpoint=True))
        return [(start, length, label)]
    count = int(rng.integers(1, 3, endpoint=True))
    lengths = np.maximum(2, (rng.uniform(0.1, 0.45, count) * n).astype(int))
    while lengths.sum() + len(lengths) - 1 > n:  # drop instances until they fit with gaps
        lengths = lengths[:-1]
    free = n - lengths.sum() - (len(lengths) - 1)
    gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, free + 1, len(lengths)))]))
    starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
    return [(int(s), int(l), label) for s, l in zip(starts, lengths)]


def _annotations(rng: np.random.Generator, instances: Sequence[tuple[int, int, int]],
                 seconds: float, names: Sequence[str]) -> list[dict[str, Any]]:
    """Official-style entries: bounds in seconds as numbers with two decimals.

    Bounds are jittered by up to a third of a segment, as human annotation is, so an action that
    ends with the video can end after it (the official files have such annotations).
    """
    items = []
    for start, length, c in instances:
        begin = max(0.0, (start + rng.uniform(-0.3, 0.3)) * seconds)
        end = (start + length + rng.uniform(-0.3, 0.3)) * seconds
        items.append({'segment': [round(begin, 2), round(end, 2)], 'label': names[c]})
    return items


def _save_features(folder: str, name: str, rgb: np.ndarray, flow: np.ndarray, layout: str,
                   dtype: str) -> None:
    """Writes one video's features as a release would: v_ID.npy, joint or per stream."""
    if layout == 'joint':
        np.save(os.path.join(folder, f'v_{name}.npy'),
                np.concatenate([rgb, flow], axis=1).astype(dtype))
    else:
        for stream, array in (('rgb', rgb), ('flow', flow)):
            np.save(os.path.join(folder, stream, f'v_{name}.npy'), array.astype(dtype))


def generate(out: str, **params: Any) -> dict[str, Any]:
    """Writes the data set into ``out`` (created; it must not exist or be empty).

    Keyword parameters, defaults in :data:`DEFAULTS`: num_classes; num_training, num_validation,
    num_testing (videos per subset); feature_dim (per stream); min_segments, max_segments
    (inclusive range of video lengths); missing_fraction (of the training and validation videos
    of each subset left without features, at least one); layout ('joint' or 'separate'); dtype
    of the feature files ('float32' or 'float16'); seed (the same parameters give byte-identical
    files).

    Returns the parameters with ``annotation_file`` and ``features`` (the paths written).
    """
    p = _params(**params)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f'{out}: exists and is not an empty folder')
    features = os.path.join(out, FEATURE_DIR)
    for folder in (('rgb', 'flow') if p['layout'] == 'separate' else ('',)):
        os.makedirs(os.path.join(features, folder), exist_ok=True)
    names = class_names(p['num_classes'])
    protos = synthetic.prototypes(p['seed'], p['num_classes'], p['feature_dim'])
    ids = youtube_ids(np.random.default_rng([p['seed'], 9]),
                      p['num_training'] + p['num_validation'] + p['num_testing'])

    database = {}
    for code, subset in enumerate(SUBSETS):
        count = p[f'num_{subset}']
        videos, ids = ids[:count], ids[count:]
        pick = np.random.default_rng([p['seed'], 10, code])
        absent = set() if subset == 'testing' else set(pick.choice(
            videos, max(1, round(p['missing_fraction'] * count)), replace=False))
        for i, video in enumerate(videos):
            rng = np.random.default_rng([p['seed'], code + 1, i])
            n = int(rng.integers(p['min_segments'], p['max_segments'], endpoint=True))
            seconds = 16 / FRAME_RATES[rng.integers(len(FRAME_RATES))]
            label = int(rng.integers(p['num_classes']))
            instances = long_instances(rng, n, label)
            rgb, flow = synthetic.render_video(rng, protos, n, np.array([label]), instances)
            annotations = ([] if subset == 'testing' else
                           _annotations(rng, instances, seconds, names))
            database[video] = {'subset': subset, 'duration': round(n * seconds, 2),
                               'resolution': '1280x720',
                               'url': f'https://www.youtube.com/watch?v={video}',
                               'annotations': annotations}
            if video not in absent:
                _save_features(features, video, rgb, flow, p['layout'], p['dtype'])
    taxonomy = [{'nodeName': name, 'nodeId': c + 1, 'parentName': 'Root', 'parentId': 0}
                for c, name in enumerate(names)]
    annotation_file = os.path.join(out, ANNOTATION_FILE)
    write_json_atomic(annotation_file, {'version': 'VERSION 1.3', 'taxonomy': taxonomy,
                                        'database': database})
    return {**p, 'annotation_file': annotation_file, 'features': features}

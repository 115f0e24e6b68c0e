"""Detection on unannotated videos: feature files in, an ActivityNet results file out.

Also the durations files that place such detections in seconds where a checkpoint localises by
video duration (``data.use_duration``, the ActivityNet configs).
"""

import os

import numpy as np

from wtal_jax import config as config_lib
from wtal_jax import method as method_lib
from wtal_jax.data import annotations, dataset
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic
from wtal_jax.postprocess import inference, localization
from wtal_jax.runs.rundir import load_checkpoint, warn


def _video_name(spec: str) -> str:
    return os.path.splitext(os.path.basename(spec.split(',')[0]))[0]


def _duration_entry(path: str, video: str, value: object) -> float:
    """Seconds of one entry of a durations file: a number (or numeric string) or an object with
    a "duration", as THUMOS'14's durations.json has."""
    if isinstance(value, dict):
        if 'duration' not in value:
            raise UserError(f'{path}: video {video}: an object without "duration"; expected '
                            'VIDEO: SECONDS or VIDEO: {"duration": SECONDS}')
        value = value['duration']
    duration = annotations.seconds(value, f'{path}: video {video}: duration')
    if duration <= 0:
        raise UserError(f'{path}: video {video}: duration {duration} s is not positive')
    return duration


def read_durations(path: str) -> dict[str, float]:
    """Video id -> seconds, from a JSON of ``{VIDEO: SECONDS}`` or ``{VIDEO: {"duration":
    SECONDS, ...}}``, or from an annotation file (``{"database": ...}``, e.g. the official
    ActivityNet JSON), whose videos without a duration are left out."""
    raw = annotations.read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f'{path}: expected a JSON object of video -> seconds or an annotation '
                        f'file, found a {type(raw).__name__}')
    if 'database' in raw:
        return {video: entry.duration for video, entry in
                annotations.load_annotations(path).items() if entry.duration is not None}
    return {str(video): _duration_entry(path, str(video), value) for video, value in raw.items()}


def match_durations(videos: list[str], durations: dict[str, float], source: str
                    ) -> tuple[list[str], np.ndarray]:
    """Each video's id and duration (seconds, (V,) float64) from ``durations``.

    A video found only without the ``v_`` prefix of feature releases (``v_ID.npy`` against the
    official JSON's ``ID``) takes the bare id, so its detections match the annotation file.
    """
    ids, missing = [], []
    for video in videos:
        bare = video[2:] if video.startswith('v_') else video
        ids.append(video if video in durations or bare not in durations else bare)
        if ids[-1] not in durations:
            missing.append(video)
    if missing:
        raise UserError(f'{source}: no duration for {len(missing)} of {len(videos)} videos '
                        f'(e.g. {", ".join(missing[:3])})')
    return ids, np.array([durations[v] for v in ids], np.float64)


def detect(checkpoint: str, feature_specs: list[str], *, overrides=(), output: str,
           which: str = 'best', seed: int | None = None,
           durations: str | None = None) -> dict:
    """Detections for feature files of videos with no annotations; writes a results JSON.

    Each spec is one ``.npy`` of shape (n, D), or ``RGB.npy,FLOW.npy`` concatenated along the
    features. The video id is the (first) file name without ``.npy`` (without a ``v_`` prefix
    where only the bare id has a duration). ``durations``: a file for :func:`read_durations`,
    needed by checkpoints that place detections by duration (``data.use_duration``, the
    ActivityNet configs) and unused by the others (a warning says so).
    """
    ckpt = load_checkpoint(checkpoint, which=which, seed=seed, overrides=overrides)
    cfg = ckpt.cfg
    videos = [_video_name(spec) for spec in feature_specs]
    seconds = None
    if cfg.data.use_duration:
        if durations is None:
            raise UserError(f'{ckpt.workdir} places detections by video duration '
                            '(data.use_duration): give --durations FILE, a JSON of video -> '
                            'seconds or the annotation file (e.g. activity_net.v1-3.min.json)')
        videos, seconds = match_durations(videos, read_durations(durations), durations)
    elif durations is not None:
        warn(f'--durations {durations} is unused: {ckpt.workdir} places detections on the '
             'segment grid (data.use_duration is False)')
    seen = {v for v in videos if videos.count(v) > 1}
    if seen:
        raise UserError(f'the same video id comes from several files: {sorted(seen)[:5]}')
    features = [dataset.load_feature_files(spec.split(','), feature_dim=cfg.data.feature_dim)
                for spec in feature_specs]
    packed = inference.pack(features, num_segments=cfg.data.num_segments,
                            chunk_size=cfg.eval.chunk_segments,
                            fixed=cfg.data.test_sampling == 'fixed')
    method, hp = method_lib.load(cfg.method), config_lib.frozen(cfg)
    outputs = inference.Predictor(method, ckpt.model, hp)(
        ckpt.state.params, packed, num_segments=cfg.data.num_segments, durations=seconds)
    results = localization.localize(
        {video: method.scores(out, hp=hp) for video, out in zip(videos, outputs)}, ckpt.names,
        localization.LocalizeConfig.from_config(cfg))
    write_json_atomic(output, results)
    return results

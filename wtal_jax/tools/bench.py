"""Speed of the training step, inference, localisation and mAP (``wtal-jax bench``).

Every rate is compared with the machine's float32 matmul rate measured in the same run, on the
matrix shape of the convolution (B*T, 3*D) @ (3*D, E), so figures are ratios, not absolutes.

Inference, localisation and mAP run on the test videos of THUMOS'14 when given the folder with
its ``durations.json``, ``gt.json`` and ``split_test.txt`` (``data=``), and otherwise on 210
generated videos of THUMOS'14-like lengths with synthetic ground truth, so that the benchmark
runs from a fresh clone. The network has random weights and the features are random: speed does
not depend on their values.
"""

import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from wtal_jax.errors import UserError

BENCHMARKS = ('train-step', 'inference', 'localize', 'map', 'all')
# THUMOS'14's test split: 210 videos of 23 to 2,614 segments (16 frames at 25 fps), whose log
# length has mean 5.46 and standard deviation 0.85 (measured on the real durations.json).
GENERATED_VIDEOS = 210
GENERATED_LOG_LENGTH = (5.46, 0.85)
GENERATED_LENGTH_RANGE = (23, 2614)


class Shape(NamedTuple):
    """The sizes a benchmark runs at; the defaults are THUMOS'14's (SPEC §1, §2)."""
    batch_size: int = 16     # B, videos per training step
    segments: int = 750      # T, segments a video is sampled to
    feature_dim: int = 2048  # D
    embed_dim: int = 2048    # E
    classes: int = 20        # C


class VideoSet(NamedTuple):
    """The videos inference, localisation and mAP run on."""
    source: str                   # where they come from, for the printed figures
    videos: tuple[str, ...]       # (V,) ids
    lengths: np.ndarray           # (V,) int, segments of each video
    gt: object                    # evaluation.GroundTruth of the 'test' subset


def _timed(fn, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    """Measured float32 GFLOP/s of a jit-compiled (m, k) @ (k, n) on the default device."""
    import jax
    import jax.numpy as jnp
    a = jax.random.uniform(jax.random.PRNGKey(0), (m, k), jnp.float32)
    b = jax.random.uniform(jax.random.PRNGKey(1), (k, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    seconds = _timed(lambda: f(a, b).block_until_ready(), repeats)
    return 2.0 * m * k * n / seconds / 1e9


def train_step_flops(b: int, t: int, d: int, e: int, c: int) -> float:
    """Model FLOPs of one step: conv forward and weight gradient (2 x 2BT3DE), classifier
    forward, weight and input gradients (3 x 2BTEC). The input gradient of the conv is not
    needed (features are fixed) and XLA does not compute it."""
    return 2 * (2.0 * b * t * 3 * d * e) + 3 * (2.0 * b * t * e * c)


def forward_flops(lengths, d: int, e: int, c: int) -> float:
    """Useful FLOPs of the inference forward pass over real (unpadded) segments."""
    return float(np.sum(lengths)) * (2.0 * 3 * d * e + 2.0 * e * c)


def _check(shape: Shape, *, repeats: int, devices: int) -> None:
    """Every size, the repetitions and the device count must be at least 1."""
    bad = [f'{name} {value}' for name, value in (*shape._asdict().items(), ('repeats', repeats),
                                                 ('devices', devices)) if value < 1]
    if bad:
        raise UserError(f'sizes must be at least 1: {", ".join(bad)}')
    if shape.batch_size % devices:
        raise UserError(f'batch size {shape.batch_size} does not divide {devices} devices')


def bench_train_step(shape: Shape, *, devices: int = 1, repeats: int = 3) -> dict:
    """Seconds per compiled training step on random data of ``shape``, on ``devices`` devices."""
    import jax
    from wtal_jax import config
    from wtal_jax.method import train
    b, t, d, e, c = shape
    if devices > jax.local_device_count():
        raise UserError(f'{devices} devices asked, {jax.local_device_count()} available')
    cfg = config.default_config()
    cfg.model.embed_dim = e
    model = train.make_model(cfg, c)
    tx = train.make_optimizer(cfg.optim)
    state = train.create_train_state(model, tx, seed=0, feature_dim=d, num_segments=t)
    rng = np.random.default_rng(0)
    batch = {'features': rng.random((b, t, d), dtype=np.float32),
             'labels': np.eye(c, dtype=np.float32)[rng.integers(0, c, b)],
             'mask': np.ones(b, np.float32)}
    batch = train.shard_batch(batch, devices)
    batch = jax.device_put(batch) if devices == 1 else batch
    step = train.compile_train_step(model, tx, train.StepConfig.from_config(cfg), devices)
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], batch)
        jax.block_until_ready(metrics)

    seconds = _timed(run, repeats)
    flops = train_step_flops(b, t, d, e, c)
    return {'benchmark': 'train-step', 'device': str(jax.devices()[0].device_kind),
            'devices': devices, 'batch_size': b, 'segments': t, 'feature_dim': d,
            'embed_dim': e, 'classes': c, 'seconds_per_step': seconds,
            'gflops_per_second': flops / seconds / 1e9,
            'matmul_gflops_per_second': matmul_gflops(b * t, 3 * d, e, repeats)}


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; --data takes the folder with THUMOS'14 "
                        'durations.json, gt.json and split_test.txt') from None
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: cannot read as JSON ({e})') from None


def thumos14_videos(folder: str) -> VideoSet:
    """THUMOS'14's test videos, n = int(duration * 25 / 16) segments each, and their ground
    truth, from ``folder``'s ``durations.json``, ``split_test.txt`` and ``gt.json``."""
    from wtal_jax.postprocess import evaluation
    durations = _read_json(os.path.join(folder, 'durations.json'))
    split_path = os.path.join(folder, 'split_test.txt')
    try:
        with open(split_path) as f:
            videos = tuple(line.strip() for line in f if line.strip())
    except OSError as e:
        raise UserError(f'{split_path}: cannot read ({e.strerror})') from None
    missing = [v for v in videos if not isinstance(durations.get(v), dict)
               or 'duration' not in durations[v]]
    if missing or not videos:
        raise UserError(f'{folder}/durations.json: no duration for {len(missing)} of the '
                        f'{len(videos)} videos of split_test.txt (e.g. {missing[:1]})')
    lengths = np.array([int(durations[v]['duration'] * 25 / 16) for v in videos])
    gt = evaluation.load_ground_truth(os.path.join(folder, 'gt.json'), 'test')
    return VideoSet(f"THUMOS'14 test split in {folder}", videos, lengths, gt)


def generated_videos(num_classes: int, *, seed: int = 0) -> VideoSet:
    """210 videos of THUMOS'14-like lengths (log-normal, clipped to the real range) with
    synthetic ground truth (:func:`wtal_jax.data.synthetic.annotations`), classes Class00..."""
    from wtal_jax.data import synthetic
    from wtal_jax.postprocess import evaluation
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(*GENERATED_LOG_LENGTH, GENERATED_VIDEOS),
                      *GENERATED_LENGTH_RANGE).astype(np.int64)
    videos = tuple(f'video_test_{i + 1:07d}' for i in range(GENERATED_VIDEOS))
    names = [f'Class{c:02d}' for c in range(num_classes)]
    database = {video: {'subset': 'test', 'annotations': items} for video, items in
                zip(videos, synthetic.annotations(lengths, names, seed=seed))}
    # Through the one annotation reader, as a real file would be.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'gt.json')
        with open(path, 'w') as f:
            json.dump({'database': database}, f)
        gt = evaluation.load_ground_truth(path, 'test')
    return VideoSet(f"{GENERATED_VIDEOS} generated videos of THUMOS'14-like lengths", videos,
                   lengths, gt)


def video_set(data: str | None, num_classes: int) -> VideoSet:
    """THUMOS'14's test split from the folder ``data``, or the generated one when None."""
    return generated_videos(num_classes) if data is None else thumos14_videos(data)


def _random_model_scores(shape: Shape, lengths):
    """Packed inference with random weights on random features of the given lengths."""
    import jax
    from wtal_jax import config
    from wtal_jax.postprocess import inference
    from wtal_jax.method import train
    cfg = config.default_config()
    cfg.model.embed_dim = shape.embed_dim
    model = train.make_model(cfg, shape.classes)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, shape.feature_dim), np.float32),
                        train=False)['params']
    rng = np.random.default_rng(0)
    features = [rng.random((n, shape.feature_dim), dtype=np.float32) for n in lengths]
    packed = inference.pack(features, num_segments=shape.segments,
                            chunk_size=cfg.eval.chunk_segments)
    predictor = inference.Predictor(model, r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg)
    return cfg, predictor, params, packed


def bench_inference(shape: Shape, test: VideoSet, *, repeats: int = 3) -> dict:
    """Seconds of the packed forward pass over every video of ``test``."""
    import jax
    from wtal_jax.postprocess import inference
    cfg, predictor, params, host_packed = _random_model_scores(shape, test.lengths)
    packed = inference.on_device(host_packed)
    seconds = _timed(lambda: predictor(params, packed, num_segments=shape.segments), repeats)
    with_copy = _timed(lambda: predictor(params, host_packed, num_segments=shape.segments),
                       repeats)
    flops = forward_flops(packed.lengths, shape.feature_dim, shape.embed_dim, shape.classes)
    chunk = cfg.eval.chunk_segments
    return {'benchmark': 'inference', 'data': test.source,
            'device': str(jax.devices()[0].device_kind),
            'videos': len(test.videos), 'segments': shape.segments,
            'feature_dim': shape.feature_dim, 'embed_dim': shape.embed_dim,
            'classes': shape.classes, 'seconds': seconds, 'seconds_with_host_copy': with_copy,
            'gflops_per_second': flops / seconds / 1e9,
            'packing_efficiency': float(packed.lengths.sum()) / packed.chunks.shape[0] / chunk,
            'compilations': predictor.compilations,
            'matmul_gflops_per_second': matmul_gflops(chunk, 3 * shape.feature_dim,
                                                      shape.embed_dim, repeats)}


def bench_localize_map(shape: Shape, test: VideoSet, *, repeats: int = 3) -> dict:
    """Seconds of localising every video of ``test`` and of evaluating the detections' mAP."""
    from wtal_jax.postprocess import evaluation, localization
    cfg, predictor, params, packed = _random_model_scores(shape, test.lengths)
    scores = dict(zip(test.videos, predictor(params, packed, num_segments=shape.segments)))
    class_names = test.gt.class_names + tuple(
        f'extra{i}' for i in range(shape.classes - len(test.gt.class_names)))
    loc_cfg = localization.LocalizeConfig(**cfg.localize)
    holder = {}

    def run_localize():
        holder['results'] = localization.localize(scores, class_names[:shape.classes], loc_cfg)

    def run_map():
        preds = evaluation.load_predictions(holder['results'], test.gt)
        evaluation.evaluate_detection(test.gt, preds, np.asarray(cfg.eval.tiou_thresholds))

    localize_seconds = _timed(run_localize, repeats)
    map_seconds = _timed(run_map, repeats)
    return {'benchmark': 'localize+map', 'data': test.source, 'videos': len(test.videos),
            'detections': sum(len(v) for v in holder['results']['results'].values()),
            'localize_seconds': localize_seconds, 'map_seconds': map_seconds,
            'total_seconds': localize_seconds + map_seconds}


def run(which: str, shape: Shape = Shape(), *, data: str | None = None, devices: int = 1,
        repeats: int = 3) -> Iterator[dict]:
    """The figures of benchmark ``which`` (one of ``BENCHMARKS``), one dict per measurement,
    each yielded as soon as it is measured. Raises UserError for sizes below 1 or bad data."""
    if which not in BENCHMARKS:
        raise UserError(f'unknown benchmark {which!r}: one of {", ".join(BENCHMARKS)}')
    _check(shape, repeats=repeats, devices=devices)
    if which in ('train-step', 'all'):
        yield bench_train_step(shape, devices=devices, repeats=repeats)
    if which == 'train-step':
        return
    test = video_set(data, shape.classes)
    if which in ('inference', 'all'):
        yield bench_inference(shape, test, repeats=repeats)
    if which != 'inference':
        yield bench_localize_map(shape, test, repeats=repeats)

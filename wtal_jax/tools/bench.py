"""Speed of the training step, the training loop, many seeds at once, inference, localisation
and mAP (``wtal-jax bench``; ``wtal-jax bench --suite accelerator`` runs them all as one suite).

Every figure is a ratio to something measured in the same run, not an absolute: a compute rate
to the machine's matmul rate on the convolution's matrix shape (B*T, 3*D) @ (3*D, E); the
training loop to the compiled step alone, on the same shapes and device; N seeds at once to N
runs of one seed.

The training loop runs the real ``train_and_evaluate`` on a data set written for it in the
THUMOS'14 layout (:func:`write_dataset`). Inference, localisation and mAP run on the test videos
of THUMOS'14 when given the folder with its ``durations.json``, ``gt.json`` and
``split_test.txt`` (``data=``), and otherwise on 210 generated videos of THUMOS'14-like lengths
with synthetic ground truth, so that every benchmark runs from a fresh clone. The network has
random weights and the features are random: speed does not depend on their values.

One module of ~700 lines on purpose: each benchmark, its sizes and the FLOP counts its rates are
figured from, side by side, so that every figure in BENCHMARKS.md reads from one place.
"""

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from wtal_jax.errors import UserError

BENCHMARKS = ('train-step', 'loop', 'seeds', 'inference', 'localize', 'map', 'all')
DTYPES = ('float32', 'bfloat16')
# THUMOS'14's test split: 210 videos of 23 to 2,614 segments (16 frames at 25 fps), whose log
# length has mean 5.46 and standard deviation 0.85 (measured on the real durations.json).
GENERATED_VIDEOS = 210
GENERATED_LOG_LENGTH = (5.46, 0.85)
GENERATED_LENGTH_RANGE = (23, 2614)
# The training loop's data: videos of 200 to 2,000 segments (1,100 on average). THUMOS'14's 200
# training videos hold 65,215 segments (durations.json), 0.53 GB of float32 features at
# D = 2,048; 59 videos of 1,100 segments hold about as many.
LOOP_TRAIN_LENGTHS = (200, 2000)
LOOP_TRAIN_VIDEOS = 59


class Shape(NamedTuple):
    """The sizes a benchmark runs at; the defaults are THUMOS'14's (SPEC §1, §2). ``config``
    is the config file whose method (and other model settings) it runs, '' for the default
    (UM); the sizes replace the file's."""
    batch_size: int = 16     # B, videos per training step
    segments: int = 750      # T, segments a video is sampled to
    feature_dim: int = 2048  # D
    embed_dim: int = 2048    # E
    classes: int = 20        # C
    config: str = ''


class VideoSet(NamedTuple):
    """The videos inference, localisation and mAP run on."""
    source: str                   # where they come from, for the printed figures
    videos: tuple[str, ...]       # (V,) ids
    lengths: np.ndarray           # (V,) int, segments of each video
    gt: object                    # eval_files.GroundTruth of the 'test' subset


def _timed(fn, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def matmul_gflops(m: int, k: int, n: int, repeats: int, dtype: str = 'float32') -> float:
    """Measured GFLOP/s of a jit-compiled (m, k) @ (k, n) in ``dtype`` on the default device."""
    import jax
    import jax.numpy as jnp
    a = jax.random.uniform(jax.random.PRNGKey(0), (m, k), jnp.float32).astype(dtype)
    b = jax.random.uniform(jax.random.PRNGKey(1), (k, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    seconds = _timed(lambda: f(a, b).block_until_ready(), repeats)
    return 2.0 * m * k * n / seconds / 1e9


def train_step_flops(b: int, t: int, d: int, e: int, c: int) -> float:
    """Model FLOPs of one UM step: conv forward and weight gradient (2 x 2BT3DE), classifier
    forward, weight and input gradients (3 x 2BTEC). The input gradient of the conv is not
    needed (features are fixed) and XLA does not compute it."""
    return 2 * (2.0 * b * t * 3 * d * e) + 3 * (2.0 * b * t * e * c)


def basnet_step_flops(b: int, t: int, d: int, e: int, c: int, f: int) -> float:
    """Model FLOPs of one BaS-Net step (SPEC §8.3), counted as :func:`train_step_flops`: per
    branch, the first CAS conv forward and weight gradient (2 x 2BT3DE), the second and the
    classifier forward, weight and input gradients (3 x 2BT3EE, 3 x 2BTE(C+1)); the suppressed
    branch's first conv also its input gradient (2BT3DE, the filter learns through it); the
    filter's two k = 1 convs (2 x 2BTDF, 3 x 2BTF)."""
    branch = 2 * (2.0 * b * t * 3 * d * e) + 3 * (2.0 * b * t * 3 * e * e) + \
        3 * (2.0 * b * t * e * (c + 1))
    return 2 * branch + 2.0 * b * t * 3 * d * e + 2 * (2.0 * b * t * d * f) + \
        3 * (2.0 * b * t * f)


def step_flops(cfg, b: int, t: int) -> float | None:
    """Model FLOPs of one training step of ``cfg``'s method; None for a method of one's own."""
    d, e, c = cfg.data.feature_dim, cfg.model.embed_dim, len(cfg.data.class_names)
    if cfg.method == 'um':
        return train_step_flops(b, t, d, e, c)
    if cfg.method == 'basnet':
        return basnet_step_flops(b, t, d, e, c, cfg.model.filter_dim)
    return None


def forward_flops(lengths, d: int, e: int, c: int, *, method: str = 'um',
                  filter_dim: int = 0) -> float | None:
    """Useful FLOPs of the inference forward pass over real (unpadded) segments: UM's conv and
    classifier; BaS-Net's filter and suppressed branch (its inference skips the base branch);
    None for a method of one's own."""
    if method == 'um':
        per_segment = 2.0 * 3 * d * e + 2.0 * e * c
    elif method == 'basnet':
        per_segment = (2.0 * 3 * d * e + 2.0 * 3 * e * e + 2.0 * e * (c + 1) +
                       2.0 * d * filter_dim + 2.0 * filter_dim)
    else:
        return None
    return float(np.sum(lengths)) * per_segment


def _check(shape: Shape, *, devices: int, **counts: int) -> None:
    """Every size, the device count and the other ``counts`` must be at least 1, and the
    devices must exist and divide the batch."""
    sizes = {k: v for k, v in shape._asdict().items() if k != 'config'}
    bad = [f'{name} {value}' for name, value in (*sizes.items(), ('devices', devices),
                                                 *counts.items()) if value < 1]
    if bad:
        raise UserError(f'sizes must be at least 1: {", ".join(bad)}')
    if shape.batch_size % devices:
        raise UserError(f'batch size {shape.batch_size} does not divide {devices} devices')
    import jax
    if devices > jax.local_device_count():
        raise UserError(f'{devices} devices asked, {jax.local_device_count()} available')


# ---------------------------------------------------------------------------------------------
# The compiled training step

def class_names(count: int) -> tuple[str, ...]:
    """Class00, Class01, ...: the classes of generated data."""
    return tuple(f'Class{c:02d}' for c in range(count))


def bench_config(shape: Shape, *, dtype: str = 'float32', seeds: tuple[int, ...] = (0,),
                 devices: int = 1):
    """The config of ``shape.config`` (the default: UM's) at ``shape``, training ``seeds`` at
    once on ``devices`` local devices; no data folder."""
    from wtal_jax import config
    if shape.config:
        cfg = config.load_config(shape.config)
        cfg.unlock()
    else:
        cfg = config.default_config()
    cfg.data.feature_dim = shape.feature_dim
    cfg.data.num_segments = shape.segments
    cfg.data.class_names = class_names(shape.classes)
    cfg.model.embed_dim = shape.embed_dim
    cfg.model.dtype = dtype
    cfg.train.batch_size = shape.batch_size
    cfg.train.num_devices = devices
    cfg.seed = seeds[0]
    cfg.seeds = tuple(seeds) if len(seeds) > 1 else ()
    cfg.eval.chunk_segments = max(cfg.eval.chunk_segments, shape.segments + 1)
    return cfg


class CompiledStep(NamedTuple):
    """The training loop's compiled step for a config, and the state it starts from."""
    step: Callable        # step(state, sums, batch, table) -> (state, sums); donates both
    state: object         # stacked TrainState (leading seed axis), replicated on the mesh
    sums: dict            # zero metric sums, replicated
    replicated: object    # sharding of the state, the sums and a feature table
    batch_sharding: object  # sharding of (S, B, ...) batch arrays


def compiled_step(cfg, *, gather: bool) -> CompiledStep:
    """:func:`training.compile_train_step` on the mesh of ``train.num_devices`` local devices, with
    ``cfg``'s seeds' initial state; ``gather``: features gathered from a device table."""
    import jax
    from wtal_jax import training
    from wtal_jax import config as config_lib
    from wtal_jax.runs import distributed
    built = training.build(cfg, tuple(cfg.data.class_names))
    mesh = training.make_mesh(distributed.training_devices(cfg.train.num_devices))
    every = training.replicated(mesh)
    sums = training.zero_metrics(built.losses, len(config_lib.run_seeds(cfg)))
    state, sums = jax.device_put((built.state, sums), every)
    step = training.compile_train_step(built.method, built.model, built.tx, built.hp, mesh,
                                       gather=gather)
    return CompiledStep(step, state, sums, every, training.batch_sharding(mesh))


def time_steps(compiled: CompiledStep, batch_fn: Callable[[int], dict], table,
               count: int) -> float:
    """Seconds of ``count`` steps dispatched back to back, as the training loop dispatches
    them, and one wait at the end; after one warm-up step (the compilation), left out.

    ``batch_fn(i)`` is step i's batch (i = 0 for the warm-up): device arrays, or host arrays
    that each call sends.
    """
    import jax
    state, sums = compiled.step(compiled.state, compiled.sums, batch_fn(0), table)
    jax.block_until_ready(sums)
    start = time.perf_counter()
    for i in range(1, count + 1):
        state, sums = compiled.step(state, sums, batch_fn(i), table)
    jax.block_until_ready((state, sums))
    return time.perf_counter() - start


def bench_train_step(shape: Shape, *, devices: int = 1, repeats: int = 3,
                     dtype: str = 'float32') -> dict:
    """Seconds per compiled training step of one seed on random data of ``shape``, on a mesh
    of ``devices`` local devices, the features either gathered in the step from a table on the
    device (the training loop's path, ``seconds_per_step``) or sent from the host with every
    step (its fallback when the features do not fit, ``host_seconds_per_step``)."""
    from wtal_jax.method.common import DTYPES
    import jax
    from wtal_jax.runs import distributed
    b, t, d, e, c = shape[:5]
    cfg = bench_config(shape, dtype=dtype, devices=devices)
    rng = np.random.default_rng(0)
    table = rng.random((b * t, d), dtype=np.float32)   # one batch's worth of segments
    index = rng.permutation(b * t).reshape(1, b, t).astype(np.int32)
    batch = {'labels': np.eye(c, dtype=np.float32)[rng.integers(0, c, (1, b))],
             'mask': np.ones((1, b), np.float32), 'row': np.arange(b, dtype=np.int32)[None]}

    gathered = compiled_step(cfg, gather=True)
    on_device = distributed.global_batch(dict(batch, index=index), gathered.batch_sharding)
    device_table = jax.device_put(table.astype(DTYPES[dtype]), gathered.replicated)
    seconds = time_steps(gathered, lambda i, batch=on_device: batch, device_table, repeats) / repeats
    del gathered, on_device, device_table

    host = compiled_step(cfg, gather=False)
    host_batch = dict(batch, features=table[index])
    host_seconds = time_steps(
        host, lambda i: distributed.global_batch(host_batch, host.batch_sharding), None,
        repeats) / repeats
    flops = step_flops(cfg, b, t)
    return {'benchmark': 'train-step', 'method': cfg.method,
            'device': str(jax.devices()[0].device_kind),
            'devices': devices, 'dtype': dtype, 'batch_size': b, 'segments': t,
            'feature_dim': d, 'embed_dim': e, 'classes': c, 'seconds_per_step': seconds,
            'host_seconds_per_step': host_seconds,
            'gflops_per_second': None if flops is None else flops / seconds / 1e9,
            'matmul_gflops_per_second': matmul_gflops(b * t, 3 * d, e, repeats, dtype)}


# ---------------------------------------------------------------------------------------------
# The training loop

class DataSet(NamedTuple):
    """A data set in the THUMOS'14 layout (SPEC §1) written by :func:`write_dataset`."""
    root: str
    class_names: tuple[str, ...]
    feature_dim: int              # D, both streams together
    train_lengths: np.ndarray     # (V,) segments of each training video
    test_lengths: np.ndarray      # (V',) segments of each test video

    def feature_bytes(self, split: str) -> int:
        """Bytes of one split's float32 features ('train' or 'test')."""
        lengths = self.train_lengths if split == 'train' else self.test_lengths
        return int(np.sum(lengths)) * self.feature_dim * 4


def loop_lengths(train_videos: int, test_videos: int, *, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Training videos of 200 to 2,000 segments (uniform) and test videos of THUMOS'14-like
    lengths (:func:`generated_lengths`)."""
    rng = np.random.default_rng([seed, 1])
    train = rng.integers(*LOOP_TRAIN_LENGTHS, train_videos, endpoint=True)
    return train, generated_lengths(test_videos, seed=seed)


def write_dataset(root: str, train_lengths, test_lengths, *, feature_dim: int, classes: int,
                  seed: int = 0) -> DataSet:
    """Writes videos of the given lengths in the THUMOS'14 layout: random features in [0, 1)
    (two streams of D/2, float32 ``.npy``), ground truth from
    :func:`wtal_jax.data.synthetic.annotations` in ``gt.json``, ``split_{train,test}.txt``.

    Written directly rather than by :func:`wtal_jax.data.synthetic.generate`, which draws the
    lengths of both splits from one range: the test videos here have THUMOS'14's lengths.
    """
    from wtal_jax.data import synthetic
    from wtal_jax.io_utils import write_json_atomic
    if feature_dim % 2:
        raise UserError(f'feature size {feature_dim} is odd: the data set has two streams '
                        '(rgb, flow) of D/2 each')
    names = class_names(classes)
    database = {}
    for code, (split, prefix, lengths) in enumerate((('train', 'validation', train_lengths),
                                                     ('test', 'test', test_lengths))):
        videos = [f'video_{prefix}_{i + 1:07d}' for i in range(len(lengths))]
        folders = [os.path.join(root, 'features', split, stream) for stream in ('rgb', 'flow')]
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
        for i, (video, n) in enumerate(zip(videos, lengths)):
            rng = np.random.default_rng([seed, code, i])
            for folder in folders:
                np.save(os.path.join(folder, video + '.npy'),
                        rng.random((int(n), feature_dim // 2), dtype=np.float32))
        items = synthetic.annotations(lengths, names, seed=seed + code)
        database.update({video: {'subset': split, 'annotations': video_items}
                         for video, video_items in zip(videos, items)})
        with open(os.path.join(root, f'split_{split}.txt'), 'w', encoding='utf-8') as f:
            f.write(''.join(video + '\n' for video in videos))
    write_json_atomic(os.path.join(root, 'gt.json'), {'database': database})
    return DataSet(root, names, feature_dim, np.asarray(train_lengths),
                   np.asarray(test_lengths))


def loop_config(shape: Shape, dataset: DataSet, *, steps: int, log_every: int,
                eval_every: int, devices: int = 1, dtype: str = 'float32'):
    """The default config on ``dataset``: ``steps`` steps, metrics fetched every ``log_every``,
    an evaluation of the test split every ``eval_every`` steps (0: only after the last step,
    which the loop always does), checkpoints at the default interval and at the end; every
    training video trains (no selection split: the last step is kept)."""
    from wtal_jax import config
    cfg = bench_config(shape, dtype=dtype, devices=devices)
    cfg.data.root = dataset.root
    cfg.data.class_names = dataset.class_names
    cfg.data.selection_fraction = 0.0
    cfg.checkpoint.select = 'last'
    cfg.train.num_steps = steps
    cfg.train.log_every_steps = log_every
    cfg.eval.every_steps = eval_every or steps
    config.validate(cfg, source='bench loop')
    return cfg


def loop_rate(rows: list[dict]) -> tuple[float, int, float]:
    """(steps per second, steps, seconds) of the training loop from its metrics.jsonl rows.

    The loop's own rate of each log window (``steps_per_second`` of its 'train' rows, first
    seed), over the windows after the first, which holds the compilation: steps / seconds.
    """
    seed = next(r['seed'] for r in rows if r['split'] == 'train')
    windows = [(r['step'], r['steps_per_second']) for r in rows
               if r['split'] == 'train' and r['seed'] == seed]
    steps = sum(b - a for (a, _), (b, _) in zip(windows, windows[1:]))
    seconds = sum((b - a) / rate for (a, _), (b, rate) in zip(windows, windows[1:]))
    return steps / seconds, steps, seconds


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux), else None."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``getrusage``'s ru_maxrss)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == 'darwin' else int(peak) * 1024   # Linux counts KiB


def peak_device_bytes(device) -> int | None:
    """The device's peak memory in use since the process started, where it reports one."""
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def step_alone(cfg, dataset: DataSet, *, on_device: bool, count: int) -> float:
    """Steps per second of the loop's compiled step on the loop's data and shapes, with the
    batch of step 0 already on the device and reused: no host work, no transfer."""
    from wtal_jax.method.common import DTYPES
    import jax
    from wtal_jax.data import pipeline
    from wtal_jax.data import splits
    from wtal_jax.runs import distributed
    split, _ = splits.load_training(cfg, dataset.class_names, progress=False)
    batchers = [pipeline.TrainBatches(split.features, split.labels, batch_size=cfg.train.batch_size,
                                      num_segments=cfg.data.num_segments, seed=cfg.seed)]
    compiled = compiled_step(cfg, gather=on_device)
    table, offsets = None, None
    if on_device:
        host_table, offsets = pipeline.pack_table(split.features, DTYPES[cfg.model.dtype])
        batchers[0].release_features()
        del split
        table = jax.device_put(host_table, compiled.replicated)
    batch = distributed.global_batch(
        pipeline.seed_batch(batchers, 0, rows=slice(None), offsets=offsets),
        compiled.batch_sharding)
    return count / time_steps(compiled, lambda i: batch, table, count)


def bench_loop(shape: Shape, *, steps: int = 30, train_videos: int = LOOP_TRAIN_VIDEOS,
               test_videos: int = GENERATED_VIDEOS, log_every: int = 10, eval_every: int = 0,
               devices: int = 1, dtype: str = 'float32', step_steps: int | None = None,
               dataset: DataSet | None = None, progress: bool = False) -> dict:
    """Trains ``steps`` steps through the real training loop (:func:`loop.train_and_evaluate`)
    and times the compiled step alone in the same process, on the same shapes and devices.

    The loop's rate is its own (``steps_per_second`` in metrics.jsonl) over its log windows
    after the first, which holds the compilation. It includes making each batch on the host
    (the prefetch thread), sending it, dispatching the step, fetching the metric sums every
    ``log_every`` steps, writing metrics.jsonl, and evaluations and checkpoints inside a window;
    it leaves out those at log steps (the loop leaves them out of its rate), as the evaluation
    and checkpoint after the last step. ``loop_wall_seconds`` is the whole call: reading the
    data, compiling, every step, evaluation and checkpoint, the report.

    The data set is ``dataset``, or ``train_videos`` of 200-2,000 segments and ``test_videos``
    of THUMOS'14-like lengths written to a temporary folder. The step alone runs
    ``step_steps`` steps (default: as many as the loop's rate counts; 0: not timed).
    Host memory: the process's peak (ru_maxrss) after training, and that peak less the
    resident memory just before it; device memory: the device's peak, where it reports one.
    """
    from wtal_jax.method.common import DTYPES
    from wtal_jax.runs import distributed, loop
    from wtal_jax.runs.rundir import RunDir
    if steps < 2 * log_every:
        raise UserError(f'--steps {steps} leaves no log window after the first (which holds '
                        f'the compilation): need at least 2 x --log-every = {2 * log_every}')
    with tempfile.TemporaryDirectory(prefix='wtal_bench_loop_') as folder:
        if dataset is None:
            dataset = write_dataset(os.path.join(folder, 'data'),
                                    *loop_lengths(train_videos, test_videos),
                                    feature_dim=shape.feature_dim, classes=shape.classes)
        cfg = loop_config(shape, dataset, steps=steps, log_every=log_every,
                          eval_every=eval_every, devices=devices, dtype=dtype)
        device = distributed.training_devices(devices)[0]
        table_bytes = int(np.sum(dataset.train_lengths)) * shape.feature_dim * \
            np.dtype(DTYPES[dtype]).itemsize
        on_device, _ = loop.data_on_device(cfg.train.data_on_device,
                                           cfg.train.device_memory_fraction, table_bytes, device)
        workdir = os.path.join(folder, 'run')
        rss_before = current_rss_bytes()
        start = time.perf_counter()
        loop.train_and_evaluate(cfg, workdir, progress=progress)
        wall = time.perf_counter() - start
        peak_host = peak_rss_bytes()
        peak_device = peak_device_bytes(device)
        rate, timed_steps, _ = loop_rate(RunDir(workdir).read_metrics())
        count = timed_steps if step_steps is None else step_steps
        step_rate = step_alone(cfg, dataset, on_device=on_device, count=count) if count \
            else None
    train_bytes = dataset.feature_bytes('train')
    return {
        'benchmark': 'loop', 'device': str(device.device_kind), 'devices': devices,
        'dtype': dtype, 'batch_size': shape.batch_size, 'segments': shape.segments,
        'feature_dim': shape.feature_dim, 'embed_dim': shape.embed_dim,
        'classes': shape.classes, 'train_videos': len(dataset.train_lengths),
        'train_segments': int(np.sum(dataset.train_lengths)),
        'train_feature_bytes': train_bytes, 'test_videos': len(dataset.test_lengths),
        'test_feature_bytes': dataset.feature_bytes('test'), 'data_on_device': bool(on_device),
        'steps': steps, 'log_every_steps': log_every, 'eval_every_steps': eval_every,
        'evaluations': -(-steps // cfg.eval.every_steps),
        'checkpoint_every_steps': cfg.checkpoint.every_steps,
        'timed_steps': timed_steps, 'loop_steps_per_second': rate,
        'step_steps_per_second': step_rate,
        'loop_to_step_ratio': rate / step_rate if step_rate else None,
        'loop_wall_seconds': wall, 'peak_host_bytes': peak_host,
        'peak_host_delta_bytes': None if rss_before is None else peak_host - rss_before,
        'host_target_bytes': 2 * train_bytes + 2 ** 30, 'peak_device_bytes': peak_device}


# ---------------------------------------------------------------------------------------------
# Many seeds at once

def bench_seeds(shape: Shape, *, seeds: int = 5, steps: int = 10, devices: int = 1,
                dtype: str = 'float32') -> dict:
    """``seeds`` seeds trained at once (one compiled step over a seed axis, ``jax.vmap``)
    against as many runs of one seed, ``steps`` steps each, through the compiled step.

    The batches are the training loop's (:class:`TrainBatches` of each seed, the features
    gathered from a device table of 2B videos of 200-2,000 segments), each sent with its step;
    the compilation (one warm-up step per compiled step) is left out.
    """
    from wtal_jax.method.common import DTYPES
    import jax
    from wtal_jax.data import pipeline
    from wtal_jax import training
    from wtal_jax.runs import distributed
    b, t, d, e, c = shape[:5]
    rng = np.random.default_rng(0)
    lengths = rng.integers(*LOOP_TRAIN_LENGTHS, 2 * b, endpoint=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    table = rng.random((int(lengths.sum()), d), dtype=np.float32)
    videos = [table[o:o + n] for o, n in zip(offsets, lengths)]   # views, no copies
    labels = np.eye(c, dtype=np.float32)[rng.integers(0, c, len(lengths))]

    def batches(seed_list, sharding):
        batchers = [pipeline.TrainBatches(videos, labels, num_segments=t, batch_size=b, seed=s)
                    for s in seed_list]
        host = [pipeline.seed_batch(batchers, i, rows=slice(None), offsets=offsets)
                for i in range(steps + 1)]
        return lambda i: distributed.global_batch(host[i], sharding)

    together = compiled_step(bench_config(shape, dtype=dtype, seeds=tuple(range(seeds)),
                                          devices=devices), gather=True)
    device_table = jax.device_put(table.astype(DTYPES[dtype]), together.replicated)
    together_seconds = time_steps(together, batches(range(seeds), together.batch_sharding),
                                  device_table, steps)
    del together
    one = compiled_step(bench_config(shape, dtype=dtype, devices=devices), gather=True)
    separate_seconds = 0.0
    for seed in range(seeds):
        # The same compiled step for every run; each starts from its own seed's state.
        built = training.build(bench_config(shape, dtype=dtype, seeds=(seed,)), class_names(c))
        run = one._replace(state=jax.device_put(built.state, one.replicated),
                           sums=jax.device_put(training.zero_metrics(built.losses, 1),
                                               one.replicated))
        separate_seconds += time_steps(run, batches([seed], one.batch_sharding), device_table,
                                       steps)
    return {'benchmark': 'seeds', 'method': 'compiled step', 'device':
            str(jax.devices()[0].device_kind), 'devices': devices, 'dtype': dtype,
            'batch_size': b, 'segments': t, 'feature_dim': d, 'embed_dim': e, 'classes': c,
            'seeds': seeds, 'steps': steps, 'together_seconds': together_seconds,
            'separate_seconds': separate_seconds,
            'separate_to_together': separate_seconds / together_seconds,
            'together_to_one_seed': together_seconds / (separate_seconds / seeds)}


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
    from wtal_jax.postprocess import eval_files
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
    gt = eval_files.load_ground_truth(os.path.join(folder, 'gt.json'), 'test')
    return VideoSet(f"THUMOS'14 test split in {folder}", videos, lengths, gt)


def generated_lengths(count: int, *, seed: int = 0) -> np.ndarray:
    """(count,) int64 THUMOS'14-like test video lengths: log-normal, clipped to the real range."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(*GENERATED_LOG_LENGTH, count),
                   *GENERATED_LENGTH_RANGE).astype(np.int64)


def generated_videos(num_classes: int, *, seed: int = 0) -> VideoSet:
    """210 videos of THUMOS'14-like lengths (:func:`generated_lengths`) with synthetic ground
    truth (:func:`wtal_jax.data.synthetic.annotations`), classes Class00..."""
    from wtal_jax.data import synthetic
    from wtal_jax.postprocess import eval_files
    lengths = generated_lengths(GENERATED_VIDEOS, seed=seed)
    videos = tuple(f'video_test_{i + 1:07d}' for i in range(GENERATED_VIDEOS))
    names = class_names(num_classes)
    database = {video: {'subset': 'test', 'annotations': items} for video, items in
                zip(videos, synthetic.annotations(lengths, names, seed=seed))}
    # Through the one annotation reader, as a real file would be.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'gt.json')
        with open(path, 'w') as f:
            json.dump({'database': database}, f)
        gt = eval_files.load_ground_truth(path, 'test')
    return VideoSet(f"{GENERATED_VIDEOS} generated videos of THUMOS'14-like lengths", videos,
                   lengths, gt)


def video_set(data: str | None, num_classes: int) -> VideoSet:
    """THUMOS'14's test split from the folder ``data``, or the generated one when None."""
    return generated_videos(num_classes) if data is None else thumos14_videos(data)


def _random_model_scores(shape: Shape, lengths):
    """Packed inference with random weights on random features of the given lengths."""
    import jax
    from wtal_jax import config
    from wtal_jax import method as method_lib
    from wtal_jax.postprocess import inference
    cfg = bench_config(shape)
    method = method_lib.load(cfg.method)
    model = method.model(cfg, shape.classes)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, shape.feature_dim), np.float32),
                        train=False)['params']
    rng = np.random.default_rng(0)
    features = [rng.random((n, shape.feature_dim), dtype=np.float32) for n in lengths]
    packed = inference.pack(features, num_segments=shape.segments,
                            chunk_size=cfg.eval.chunk_segments,
                            fixed=cfg.data.test_sampling == 'fixed')
    predictor = inference.Predictor(method, model, config.frozen(cfg))
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
    flops = forward_flops(packed.lengths, shape.feature_dim, shape.embed_dim, shape.classes,
                          method=cfg.method, filter_dim=cfg.model.get('filter_dim', 0))
    chunk = cfg.eval.chunk_segments
    return {'benchmark': 'inference', 'method': cfg.method, 'data': test.source,
            'device': str(jax.devices()[0].device_kind),
            'videos': len(test.videos), 'segments': shape.segments,
            'feature_dim': shape.feature_dim, 'embed_dim': shape.embed_dim,
            'classes': shape.classes, 'seconds': seconds, 'seconds_with_host_copy': with_copy,
            'gflops_per_second': None if flops is None else flops / seconds / 1e9,
            'packing_efficiency': float(packed.lengths.sum()) / packed.chunks.shape[0] / chunk,
            'compilations': predictor.compilations,
            'matmul_gflops_per_second': matmul_gflops(chunk, 3 * shape.feature_dim,
                                                      shape.embed_dim, repeats)}


def bench_localize_map(shape: Shape, test: VideoSet, *, repeats: int = 3) -> dict:
    """Seconds of localising every video of ``test`` and of evaluating the detections' mAP."""
    from wtal_jax.postprocess import average_precision, eval_files, localization
    cfg, predictor, params, packed = _random_model_scores(shape, test.lengths)
    from wtal_jax import config as config_lib, method as method_lib
    outputs = dict(zip(test.videos, predictor(params, packed, num_segments=shape.segments)))
    class_names = test.gt.class_names + tuple(
        f'extra{i}' for i in range(shape.classes - len(test.gt.class_names)))
    loc_cfg = localization.LocalizeConfig.from_config(cfg)
    method, hp = method_lib.load(cfg.method), config_lib.frozen(cfg)
    holder = {}

    def run_localize():   # the method's scores (fusion) and the shared localisation
        scores = {video: method.scores(out, hp=hp) for video, out in outputs.items()}
        holder['results'] = localization.localize(scores, class_names[:shape.classes], loc_cfg)

    def run_map():
        preds = eval_files.load_predictions(holder['results'], test.gt)
        average_precision.evaluate_detection(test.gt, preds, np.asarray(cfg.eval.tiou_thresholds))

    localize_seconds = _timed(run_localize, repeats)
    map_seconds = _timed(run_map, repeats)
    return {'benchmark': 'localize+map', 'data': test.source, 'videos': len(test.videos),
            'detections': sum(len(v) for v in holder['results']['results'].values()),
            'localize_seconds': localize_seconds, 'map_seconds': map_seconds,
            'total_seconds': localize_seconds + map_seconds}


LOOP_STEPS = 30    # default steps of bench loop: two log windows timed after the first
SEED_STEPS = 10    # default steps of each run of bench seeds


def run(which: str, shape: Shape = Shape(), *, data: str | None = None, devices: int = 1,
        repeats: int = 3, dtype: str = 'float32', steps: int | None = None,
        train_videos: int = LOOP_TRAIN_VIDEOS, test_videos: int = GENERATED_VIDEOS,
        log_every: int = 10, eval_every: int = 0, num_seeds: int = 5) -> Iterator[dict]:
    """The figures of benchmark ``which`` (one of ``BENCHMARKS``), one dict per measurement,
    each yielded as soon as it is measured. Raises UserError for sizes below 1 or bad data.

    ``steps``: of the loop (default ``LOOP_STEPS``) and of each seeds run (``SEED_STEPS``);
    the other keywords are :func:`bench_loop`'s and :func:`bench_seeds`'s.
    """
    if which not in BENCHMARKS:
        raise UserError(f'unknown benchmark {which!r}: one of {", ".join(BENCHMARKS)}')
    if dtype not in DTYPES:
        raise UserError(f'unknown dtype {dtype!r}: one of {", ".join(DTYPES)}')
    if eval_every < 0:
        raise UserError(f'--eval-every must be 0 (only after the last step) or more, got '
                        f'{eval_every}')
    _check(shape, devices=devices, repeats=repeats, steps=1 if steps is None else steps,
           train_videos=train_videos, test_videos=test_videos, log_every=log_every,
           seeds=num_seeds)
    everything = which == 'all'
    if which == 'train-step' or everything:
        yield bench_train_step(shape, devices=devices, repeats=repeats, dtype=dtype)
    if which == 'loop' or everything:
        yield bench_loop(shape, steps=steps or LOOP_STEPS, train_videos=train_videos,
                         test_videos=test_videos, log_every=log_every, eval_every=eval_every,
                         devices=devices, dtype=dtype)
    if which == 'seeds' or everything:
        yield bench_seeds(shape, seeds=num_seeds, steps=steps or SEED_STEPS, devices=devices,
                          dtype=dtype)
    if which in ('train-step', 'loop', 'seeds'):
        return
    test = video_set(data, shape.classes)
    if which in ('inference', 'all'):
        yield bench_inference(shape, test, repeats=repeats)
    if which != 'inference':
        yield bench_localize_map(shape, test, repeats=repeats)

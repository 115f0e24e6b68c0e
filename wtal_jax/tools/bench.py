"""``wtal-jax bench``: speed of the training step, inference, localisation and mAP.

Every rate is compared with the machine's float32 matmul rate measured in the same run, on the
matrix shape of the convolution (B*T, 3*D) @ (3*D, E), so figures are ratios, not absolutes.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

SHARED_DURATIONS = os.path.join('..', 'shared', 'data', 'thumos14', 'durations.json')


def add_parser(sub) -> None:
    p = sub.add_parser('bench', help='benchmarks (train-step, inference, localize, map)')
    p.add_argument('which', choices=('train-step', 'inference', 'localize', 'map', 'all'))
    p.add_argument('--batch-size', type=int, default=16, help='B (train-step)')
    p.add_argument('--segments', type=int, default=750, help='T')
    p.add_argument('--feature-dim', type=int, default=2048, help='D')
    p.add_argument('--embed-dim', type=int, default=2048, help='E')
    p.add_argument('--classes', type=int, default=20, help='C')
    p.add_argument('--repeats', type=int, default=3, help='timed repetitions (after warm-up)')
    p.add_argument('--devices', type=int, default=1, help='local devices for train-step')
    p.add_argument('--data', default=os.path.dirname(SHARED_DURATIONS),
                   help="folder with THUMOS'14 durations.json, gt.json, split_test.txt "
                        '(video lengths and ground truth of the test split)')
    p.add_argument('--json', action='store_true', help='print the figures as one JSON object')
    p.set_defaults(func=lambda args, overrides: main(args))


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


def bench_train_step(args) -> dict:
    import jax
    import jax.numpy as jnp
    from wtal_jax import config
    from wtal_jax.method import train
    b, t, d, e, c = args.batch_size, args.segments, args.feature_dim, args.embed_dim, args.classes
    cfg = config.default_config()
    cfg.model.embed_dim = e
    model = train.make_model(cfg, c)
    tx = train.make_optimizer(cfg.optim)
    state = train.create_train_state(model, tx, seed=0, feature_dim=d, num_segments=t)
    rng = np.random.default_rng(0)
    batch = {'features': rng.random((b, t, d), dtype=np.float32),
             'labels': np.eye(c, dtype=np.float32)[rng.integers(0, c, b)],
             'mask': np.ones(b, np.float32)}
    batch = train.shard_batch(batch, args.devices)
    batch = jax.device_put(batch) if args.devices == 1 else batch
    step = train.compile_train_step(model, tx, train.StepConfig.from_config(cfg), args.devices)
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], batch)
        jax.block_until_ready(metrics)

    seconds = _timed(run, args.repeats)
    flops = train_step_flops(b, t, d, e, c)
    return {'benchmark': 'train-step', 'device': str(jax.devices()[0].device_kind),
            'devices': args.devices, 'batch_size': b, 'segments': t, 'feature_dim': d,
            'embed_dim': e, 'classes': c, 'seconds_per_step': seconds,
            'gflops_per_second': flops / seconds / 1e9,
            'matmul_gflops_per_second': matmul_gflops(b * t, 3 * d, e, args.repeats)}


def _thumos_test_lengths(folder: str) -> tuple[list[str], np.ndarray]:
    """Test video ids and their segment counts n = int(duration * 25 / 16) (real durations)."""
    path = os.path.join(folder, 'durations.json')
    if not os.path.exists(path):
        raise SystemExit(f"bench: {path} not found; pass --data FOLDER with THUMOS'14 "
                         'durations.json, gt.json and split_test.txt')
    with open(path) as f:
        durations = json.load(f)
    with open(os.path.join(folder, 'split_test.txt')) as f:
        videos = [line.strip() for line in f if line.strip()]
    return videos, np.array([int(durations[v]['duration'] * 25 / 16) for v in videos])


def _random_model_scores(args, videos, lengths):
    """Packed inference with random weights on random features of the real lengths."""
    import jax
    from wtal_jax import config
    from wtal_jax.postprocess import inference
    from wtal_jax.method import train
    cfg = config.default_config()
    cfg.model.embed_dim = args.embed_dim
    model = train.make_model(cfg, args.classes)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, args.feature_dim), np.float32),
                        train=False)['params']
    rng = np.random.default_rng(0)
    features = [rng.random((n, args.feature_dim), dtype=np.float32) for n in lengths]
    packed = inference.pack(features, num_segments=args.segments,
                            chunk_size=cfg.eval.chunk_segments)
    predictor = inference.Predictor(model, r_act=cfg.model.r_act, r_bkg=cfg.model.r_bkg)
    return cfg, predictor, params, packed


def bench_inference(args) -> dict:
    import jax
    videos, lengths = _thumos_test_lengths(args.data)
    cfg, predictor, params, host_packed = _random_model_scores(args, videos, lengths)
    from wtal_jax.postprocess import inference
    packed = inference.on_device(host_packed)
    seconds = _timed(lambda: predictor(params, packed, num_segments=args.segments),
                     args.repeats)
    with_copy = _timed(lambda: predictor(params, host_packed, num_segments=args.segments),
                       args.repeats)
    flops = forward_flops(packed.lengths, args.feature_dim, args.embed_dim, args.classes)
    chunk = cfg.eval.chunk_segments
    return {'benchmark': 'inference', 'device': str(jax.devices()[0].device_kind),
            'videos': len(videos), 'segments': args.segments, 'feature_dim': args.feature_dim,
            'embed_dim': args.embed_dim, 'classes': args.classes,
            'seconds': seconds, 'seconds_with_host_copy': with_copy,
            'gflops_per_second': flops / seconds / 1e9,
            'packing_efficiency': float(packed.lengths.sum()) / packed.chunks.shape[0] / chunk,
            'compilations': predictor.compilations,
            'matmul_gflops_per_second': matmul_gflops(chunk, 3 * args.feature_dim,
                                                      args.embed_dim, args.repeats)}


def bench_localize_map(args) -> dict:
    from wtal_jax.postprocess import evaluation, localization
    videos, lengths = _thumos_test_lengths(args.data)
    cfg, predictor, params, packed = _random_model_scores(args, videos, lengths)
    scores = dict(zip(videos, predictor(params, packed, num_segments=args.segments)))
    gt = evaluation.load_ground_truth(os.path.join(args.data, 'gt.json'), 'test')
    class_names = gt.class_names + tuple(
        f'extra{i}' for i in range(args.classes - len(gt.class_names)))
    loc_cfg = localization.LocalizeConfig(**cfg.localize)
    holder = {}

    def run_localize():
        holder['results'] = localization.localize(scores, class_names[:args.classes], loc_cfg)

    def run_map():
        preds = evaluation.load_predictions(holder['results'], gt)
        evaluation.evaluate_detection(gt, preds, np.asarray(cfg.eval.tiou_thresholds))

    localize_seconds = _timed(run_localize, args.repeats)
    map_seconds = _timed(run_map, args.repeats)
    return {'benchmark': 'localize+map', 'videos': len(videos),
            'detections': sum(len(v) for v in holder['results']['results'].values()),
            'localize_seconds': localize_seconds, 'map_seconds': map_seconds,
            'total_seconds': localize_seconds + map_seconds}


def main(args: argparse.Namespace) -> int:
    runs = {'train-step': [bench_train_step], 'inference': [bench_inference],
            'localize': [bench_localize_map], 'map': [bench_localize_map],
            'all': [bench_train_step, bench_inference, bench_localize_map]}[args.which]
    for run in runs:
        figures = run(args)
        if args.json:
            print(json.dumps(figures))
        else:
            print(figures['benchmark'] + ':')
            for key, value in figures.items():
                if key != 'benchmark':
                    print(f'  {key:26s} {value:.4g}' if isinstance(value, float)
                          else f'  {key:26s} {value}')
        sys.stdout.flush()
    return 0

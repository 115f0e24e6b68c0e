"""``wtal-jax bench --suite accelerator``: every benchmark in one prepared run, one table.

The suite times, in this order: the training step (float32 and bfloat16, features gathered from
a device table and sent from the host); the real training loop against the compiled step alone
(float32 and bfloat16); the paper's protocol (``--protocol-steps`` steps, 10,000 by default,
evaluating 210 test videos of THUMOS'14's lengths every 500 steps: its whole wall time, nothing
extrapolated); N seeds at once against N runs of one seed; inference and localisation + mAP of
the 210 test videos. The loop and the protocol share one data set written to a temporary folder.

At THUMOS'14's sizes (``--scale thumos``, the default on an accelerator) it is meant to finish in
under 5 minutes on one accelerator. On a CPU it runs quick sizes by default and says so:
THUMOS'14's would take hours there.
"""

import json
import sys
import tempfile
import time
from typing import NamedTuple

from wtal_jax.errors import UserError
from wtal_jax.tools import bench

SUITES = ('accelerator',)


class Scale(NamedTuple):
    """The sizes and lengths of one suite run."""
    shape: bench.Shape
    repeats: int              # timed train-step steps; inference and localisation runs
    loop_steps: int           # steps of each loop run
    log_every: int            # train.log_every_steps of the loop and the protocol
    train_videos: int         # training videos of 200-2,000 segments
    protocol_steps: int
    protocol_eval_every: int
    seed_steps: int           # steps of each seeds run


SCALES = {
    'thumos': Scale(bench.Shape(), repeats=20, loop_steps=300, log_every=10,
                    train_videos=bench.LOOP_TRAIN_VIDEOS, protocol_steps=10_000,
                    protocol_eval_every=500, seed_steps=50),
    'quick': Scale(bench.Shape(batch_size=4, segments=32, feature_dim=32, embed_dim=32),
                   repeats=2, loop_steps=20, log_every=5, train_videos=12, protocol_steps=40,
                   protocol_eval_every=20, seed_steps=5),
}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_suite(scale: Scale, *, num_seeds: int = 5, data: str | None = None) -> list[dict]:
    """Every benchmark of the suite at ``scale``, in order; each result dict as the single
    benchmark gives it (the protocol's is ``bench_loop``'s, named 'protocol')."""
    shape, results = scale.shape, []
    start = time.perf_counter()

    def done(result: dict) -> None:
        results.append(result)
        _progress(f'[{time.perf_counter() - start:6.1f} s] {result["benchmark"]} '
                  f'{result.get("dtype", "")}: {json.dumps(result)}')

    for dtype in bench.DTYPES:
        done(bench.bench_train_step(shape, repeats=scale.repeats, dtype=dtype))
    with tempfile.TemporaryDirectory(prefix='wtal_bench_suite_') as folder:
        dataset = bench.write_dataset(
            folder, *bench.loop_lengths(scale.train_videos, bench.GENERATED_VIDEOS),
            feature_dim=shape.feature_dim, classes=shape.classes)
        for dtype in bench.DTYPES:
            done(bench.bench_loop(shape, steps=scale.loop_steps, log_every=scale.log_every,
                                  dtype=dtype, dataset=dataset))
        protocol = bench.bench_loop(shape, steps=scale.protocol_steps,
                                    log_every=scale.log_every,
                                    eval_every=scale.protocol_eval_every, dataset=dataset,
                                    step_steps=0)
        done(dict(protocol, benchmark='protocol'))
    done(bench.bench_seeds(shape, seeds=num_seeds, steps=scale.seed_steps))
    test = bench.video_set(data, shape.classes)
    done(bench.bench_inference(shape, test, repeats=scale.repeats))
    done(bench.bench_localize_map(shape, test, repeats=max(1, scale.repeats // 4)))
    return results


def _gb(num_bytes) -> str:
    return 'n/a' if num_bytes is None else f'{num_bytes / 1e9:.2f} GB'


def table_row(r: dict) -> tuple[str, str, str, str, str]:
    """(benchmark, setting, measured, compared with (same run), ratio) of one result."""
    name, dtype = r['benchmark'], r.get('dtype', '')
    if name == 'train-step':
        return (name, dtype,
                f"{r['seconds_per_step']:.4g} s/step (device table); "
                f"{r['host_seconds_per_step']:.4g} s/step (features from the host)",
                f"{r['gflops_per_second']:,.0f} against {r['matmul_gflops_per_second']:,.0f} "
                f'GFLOP/s ({dtype} matmul)',
                f"{100 * r['gflops_per_second'] / r['matmul_gflops_per_second']:.0f} %")
    if name == 'loop':
        return (name, dtype,
                f"{r['loop_steps_per_second']:.4g} steps/s over {r['timed_steps']} steps; peak "
                f"host {_gb(r['peak_host_bytes'])}, device {_gb(r['peak_device_bytes'])}",
                f"step alone {r['step_steps_per_second']:.4g} steps/s",
                f"{100 * r['loop_to_step_ratio']:.0f} %")
    if name == 'protocol':
        return (name, dtype,
                f"{r['steps']:,} steps, {r['evaluations']} evaluations of {r['test_videos']} "
                f"test videos: {r['loop_wall_seconds']:.1f} s in all",
                f"loop {r['loop_steps_per_second']:.4g} steps/s between evaluations", '')
    if name == 'seeds':
        n = r['seeds']
        return (name, dtype,
                f"{n} seeds at once {r['together_seconds']:.3g} s; {n} runs of one seed "
                f"{r['separate_seconds']:.3g} s ({r['steps']} steps each)",
                f"one seed {r['separate_seconds'] / n:.3g} s",
                f"{r['separate_to_together']:.2f}x faster; {n} cost "
                f"{r['together_to_one_seed']:.2f}x one")
    if name == 'inference':
        return (name, 'float32', f"{r['seconds']:.4g} s for {r['videos']} videos",
                f"{r['gflops_per_second']:,.0f} against {r['matmul_gflops_per_second']:,.0f} "
                'GFLOP/s (float32 matmul)',
                f"{100 * r['gflops_per_second'] / r['matmul_gflops_per_second']:.0f} %")
    return (name, '', f"{r['total_seconds']:.3g} s for {r['videos']} videos "
                      f"({r['detections']:,} detections)",
            f"localisation {r['localize_seconds']:.3g} s, mAP {r['map_seconds']:.3g} s", '')


def format_table(results: list[dict]) -> str:
    """One Markdown table of the suite's results."""
    lines = ['| benchmark | dtype | measured | compared with (same run) | ratio |',
             '| --- | --- | --- | --- | --- |']
    lines += ['| ' + ' | '.join(table_row(r)) + ' |' for r in results]
    return '\n'.join(lines)


class Suite(NamedTuple):
    """A finished suite: where it ran, at which sizes and why, its results and wall time."""
    header: str
    scale: str
    scale_reason: str
    device: str
    platform: str
    jax_version: str
    results: list
    seconds: float

    def to_json(self, suite: str) -> dict:
        return {'suite': suite, 'scale': self.scale, 'scale_reason': self.scale_reason,
                'device': self.device, 'platform': self.platform, 'jax': self.jax_version,
                'seconds': self.seconds, 'results': self.results}


def choose_scale(scale: str, platform: str, *, protocol_steps: int | None = None
                 ) -> tuple[str, str, Scale]:
    """(name, why, sizes): ``scale`` as asked, or for 'auto' quick on a CPU and thumos on an
    accelerator; ``protocol_steps`` replaces the protocol's length."""
    if scale == 'auto':
        name = 'quick' if platform == 'cpu' else 'thumos'
        why = (f'chosen automatically on a {platform}'
               + ("; --scale thumos for THUMOS'14 sizes" if name == 'quick' else ''))
    else:
        name, why = scale, 'asked'
    sizes = SCALES[name]
    if protocol_steps is not None:
        if protocol_steps < 2 * sizes.log_every:
            raise UserError(f'--protocol-steps {protocol_steps}: need at least '
                            f'{2 * sizes.log_every}')
        sizes = sizes._replace(protocol_steps=protocol_steps)
    return name, why, sizes


def run(suite: str, *, scale: str = 'auto', protocol_steps: int | None = None,
        num_seeds: int = 5, data: str | None = None) -> Suite:
    """Runs suite ``suite`` (``SUITES``) on the first device at ``scale`` (see
    :func:`choose_scale`), saying where and at which sizes on stderr before it starts."""
    import jax
    if suite not in SUITES:
        raise UserError(f'unknown suite {suite!r}: one of {", ".join(SUITES)}')
    if num_seeds < 1:
        raise UserError(f'--num-seeds must be at least 1, got {num_seeds}')
    device = jax.devices()[0]
    name, why, sizes = choose_scale(scale, device.platform, protocol_steps=protocol_steps)
    header = (f'suite {suite} on {device.device_kind} ({device.platform}), jax '
              f'{jax.__version__}: {name} sizes ({why}): {dict(sizes.shape._asdict())}, '
              f'loop {sizes.loop_steps} steps, protocol {sizes.protocol_steps} steps with '
              f'an evaluation every {sizes.protocol_eval_every}')
    _progress(header)
    start = time.perf_counter()
    results = run_suite(sizes, num_seeds=num_seeds, data=data)
    return Suite(header, name, why, device.device_kind, device.platform, jax.__version__,
                 results, time.perf_counter() - start)

"""The training loop: ``train_and_evaluate``, the one long orchestrating function.

It keeps the device busy. The training features live on the device when they fit (one packed
table, uploaded once); each step sends only the (S, B, T) segment indices, labels and masks —
a pure function of (seed, step) — and the gather happens inside the compiled step. Metric sums
stay on the device and are fetched every ``train.log_every_steps``, where the non-finite check
happens; checkpoints are saved asynchronously. Everything it calls is testable on its own.
"""

import dataclasses
import math
import os
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wtal_jax.data import pipeline
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic
from wtal_jax import training
from wtal_jax import config as config_lib
from wtal_jax.data import splits as data_splits
from wtal_jax.data.splits import SELECTION
from wtal_jax.postprocess.evaluator import Evaluator
from wtal_jax.runs import checkpoints, distributed, memory, summary
from wtal_jax.runs.rundir import REPORT_FILE, RunDir, best_key, load_checkpoint, resolve


class TrainingDiverged(UserError):
    """The loss or the parameters became NaN or infinite; earlier checkpoints are intact."""


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Where the training features live

def device_memory_bytes(device) -> tuple[int, str]:
    """(bytes, where from) of a device's memory; a CPU device's memory is the host's."""
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and stats.get('bytes_limit'):
        return int(stats['bytes_limit']), f'{device.platform.upper()} memory'
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), 'host memory'


def data_on_device(mode: str, fraction: float, table_bytes: int, device) -> tuple[bool, str]:
    """Whether the packed training features go to the device, and why (for the log)."""
    size = f'{table_bytes / 2 ** 20:.0f} MiB'   # of training features: the log line says so
    if mode != 'auto':
        return mode == 'always', f'{size}, train.data_on_device={mode}'
    limit, what = device_memory_bytes(device)
    fits = table_bytes <= fraction * limit
    return fits, (f'{size} {"fit" if fits else "exceed"} train.device_memory_fraction='
                  f'{fraction:g} of the {limit / 2 ** 30:.1f} GiB {what}')


# ---------------------------------------------------------------------------------------------
# Pieces of the loop

def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


class _Evaluations:
    """The evaluations of a run (primary process only): the selection split when it selects,
    and the test split, for every seed; rows go to metrics.jsonl."""

    def __init__(self, cfg, splits: dict, model, run: RunDir, seeds):
        self.cfg, self.run, self.seeds = cfg, run, seeds
        self.evaluators = {name: Evaluator(cfg, split, model, split_name=name)
                           for name, split in splits.items()}

    def __call__(self, state, step: int) -> dict[str, list[float]]:
        """Evaluates every seed; returns {metric key: [value per seed]} for the checkpoint."""
        scalars = {}
        for index, seed in enumerate(self.seeds):
            params = distributed.local_params(state.params, index)
            for name, evaluator in self.evaluators.items():
                metrics = evaluator(params).metrics
                self.run.append_metrics({'step': step, 'split': name, 'seed': seed, **metrics})
                for key, value in _scalars(metrics).items():
                    scalars.setdefault(checkpoints.metric_key(name, key), []).append(value)
        return scalars


# The progress line: count, a short bar, then what matters most first (the last evaluation's
# mAP, the loss, one rate), so that an 80-column terminal shows all of it.
BAR_FORMAT = '{n_fmt}/{total_fmt} {bar:10} {desc} [{elapsed}<{remaining}]'


def _postfix(mean: dict, rate: float, last_map: float | None) -> str:
    """What the progress bar shows after the count, most important first, one rate;
    ``last_map``: the selection split's average mAP at the last evaluation (the test split's
    numbers are the report's, at the end)."""
    shown = '' if last_map is None else f'sel {100 * last_map:.2f} | '
    return shown + f"loss {mean['loss']:.4g} | {rate:.4g} steps/s"


def _note_splits(cfg, splits: dict) -> None:
    """Notes clipped annotations and videos left out (data.missing=skip) of each split."""
    for name, split in splits.items():
        if split.num_clipped:
            note(f'note: {split.num_clipped} annotations of the {name} split end after '
                 'their video and were clipped')
        if split.num_before_start:
            note(f'note: {split.num_before_start} annotations of the {name} split start '
                 'before 0 s (a negative time) and were clipped at 0')
        if split.missing:
            shown = ', '.join(split.missing[:5]) + (', ...' if len(split.missing) > 5 else '')
            note(f'note: {len(split.missing)} videos of the {name} split have no features '
                 f'and are left out (data.missing=skip): {shown}'
                 + ('; their ground truth counts as missed' if name != cfg.data.train.subset
                    else ''))


def _selection_map(scalars: dict) -> float | None:
    """The mean over seeds of the selection split's average mAP in an evaluation's
    ``scalars`` (None without a selection split)."""
    values = scalars.get(checkpoints.metric_key(SELECTION, 'average_mAP'))
    return float(np.mean(values)) if values else None


def _learning_rate(cfg, step: int) -> float:
    """The learning rate of update ``step`` (counted from 1): the schedule after step − 1."""
    schedule = training.learning_rate_schedule(cfg.optim.learning_rate, tuple(cfg.optim.lr_list))
    return float(schedule(step - 1))


def _mean_over_seeds(values: list[dict]) -> dict:
    return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


# ---------------------------------------------------------------------------------------------
# Training

def _load_training(cfg, procs, *, progress: bool):
    """(class names, training split, evaluation splits by name so far) of a config, notes
    printed. The evaluation splits hold the selection split under ``checkpoint.select=selection``;
    the test split is read by :func:`_load_test`, once the training features are packed."""
    names = data_splits.class_names(cfg)
    train_split, selection_split = data_splits.load_training(cfg, names, progress=progress)
    eval_splits = {}
    if cfg.checkpoint.select == 'selection':
        eval_splits[SELECTION] = selection_split
        if not len(selection_split):
            raise UserError(f'checkpoint.select=selection, but data.selection_fraction='
                            f'{cfg.data.selection_fraction:g} holds out no training video')
    if procs.primary:
        _note_splits(cfg, {cfg.data.train.subset: train_split, **eval_splits})
        if SELECTION in eval_splits:
            held_out = len(eval_splits[SELECTION])
            note(f'note: selection split: {held_out} of {len(train_split) + held_out} '
                 'training videos (data.selection_fraction)')
    return names, train_split, eval_splits


def _load_test(cfg, names, procs, *, progress: bool):
    """The test split of a config, its notes printed."""
    split = data_splits.load_split(cfg, cfg.data.test.subset, names, progress=progress)
    if procs.primary:
        _note_splits(cfg, {cfg.data.test.subset: split})
    return split


def _restore_or_start(run: RunDir, cfg, names, built, replicated, fingerprint, procs):
    """(loop state on the mesh, its step): the newest intact checkpoint of the run, checked to
    be the same run on the same data, or a fresh start (from ``train.init_from`` if set)."""
    if not run.steps():
        state = checkpoints.saved_state(built.state, built.losses)
        if cfg.train.init_from:
            state['train'] = _init_from(cfg, names, built)
        return distributed.replicate(state, replicated), 0
    run.check_same_run(cfg)
    _refuse_past(run, cfg.train.num_steps)
    state, meta, start = run.restore(checkpoints.abstract_state(cfg, names, replicated))
    if meta.get('data') and meta['data'] != fingerprint:
        raise UserError(
            f'{run.path} was trained on other data ({meta["data"]["videos"]} training videos, '
            f'fingerprint {meta["data"]["sha256"][:12]}); {cfg.data.root} gives '
            f'{fingerprint["videos"]} ({fingerprint["sha256"][:12]}): the same videos with the '
            'same lengths are needed to resume')
    if procs.primary:
        note(f'resuming from step {start} in {run.path}')
    return state, start


def _refuse_what_cannot_fit(cfg, table_bytes: int = 0) -> None:
    """Refuses a config whose training needs more memory than a device has (``memory``: a
    floor, from the config alone; ``table_bytes``: the training features going to it)."""
    devices = distributed.training_devices(cfg.train.num_devices)
    memory.check(memory.for_training(cfg, len(devices), table_bytes=table_bytes), devices,
                 'training')


def _refuse_past(run: RunDir, num_steps: int) -> None:
    """Refuses to resume a run saved past ``train.num_steps``: its checkpoints, metrics and
    report would then describe two lengths of one run."""
    last = run.steps()[-1]
    if last > num_steps:
        raise UserError(f'{run.path} has trained to step {last}, past train.num_steps='
                        f'{num_steps}: resume it with --config.train.num_steps={last} or more, '
                        f'evaluate an earlier step with evaluate --checkpoint '
                        f'{run.checkpoint_dir}/STEP, or train {num_steps} steps in a new '
                        '--workdir')


def _note_training_data(where: str, why: str, seeds: int, devices: int, processes: int) -> None:
    """Where the training features live, and why, in two lines of at most 80 columns."""
    note(f'training data: {where}; {seeds} seed{"s" if seeds > 1 else ""} on {devices} '
         f'device{"s" if devices > 1 else ""}'
         + (f' in {processes} processes' if processes > 1 else ''))
    note(f'note: {why}')


class TrainingData(NamedTuple):
    """Where the step's batches come from: one batch maker per seed, and the device table of
    the training features with each video's offset in it (both None on the host path)."""
    batchers: list
    table: object
    offsets: np.ndarray | None


def _training_data(cfg, train_split, seeds, devices, replicated, procs) -> TrainingData:
    """(per-seed batch makers, device table or None, table offsets or None) for the step.

    The training features go to the device as one packed table when they fit (see
    :func:`data_on_device`; process 0 decides for every process, which must compile the same
    step); the host then keeps only the videos' lengths.
    """
    batchers = [pipeline.TrainBatches(
        train_split.features, train_split.labels, num_segments=cfg.data.num_segments,
        batch_size=cfg.train.batch_size, seed=seed, order=cfg.train.batch_order)
        for seed in seeds]
    table_dtype = np.float32 if cfg.model.dtype == 'float32' else jnp.bfloat16
    table_bytes = int(train_split.num_segments.sum()) * train_split.feature_dim * \
        np.dtype(table_dtype).itemsize
    local_device = next(d for d in devices if d.process_index == procs.index)
    on_device, why = data_on_device(cfg.train.data_on_device, cfg.train.device_memory_fraction,
                                    table_bytes, local_device)
    if procs.count > 1:
        on_device = bool(distributed.broadcast(np.array(on_device)))
    if on_device:
        _refuse_what_cannot_fit(cfg, table_bytes)
    if procs.primary:
        where = 'on the device, gathered in the step' if on_device else \
            f'on the host, {cfg.train.prefetch_workers} prefetch threads'
        _note_training_data(where, why, len(seeds), len(devices), procs.count)
    if not on_device:
        return TrainingData(batchers, None, None)
    host_table, offsets = pipeline.pack_table(train_split.features, table_dtype)
    for b in batchers:
        b.release_features()   # only lengths are needed from here on
    return TrainingData(batchers, distributed.replicate(host_table, replicated), offsets)


def train_and_evaluate(cfg, workdir: str, *, progress: bool = True) -> dict:
    """Trains ``cfg`` in ``workdir`` (resuming from its latest intact checkpoint), evaluating on
    the way; writes ``report.json`` and returns the report (primary process; {} elsewhere).

    A run folder this call created is removed again when it fails before writing anything into
    it (bad data, a bad config; ``RunDir``): a failed start leaves no empty run behind.
    """
    from tqdm import tqdm

    procs = distributed.current()
    _check_init_from(cfg)
    _refuse_what_cannot_fit(cfg)   # before the run folder or any buffer exists
    # The run directory first: a second writer is refused before any work.
    with RunDir(workdir, write=True, primary=procs.primary,
                barrier=distributed.barrier if procs.count > 1 else None) as run:
        if procs.primary:
            data_splits.prepare_dataset(cfg, progress=progress)
        distributed.barrier('wtal_jax:data')
        if not cfg.data.root:
            raise UserError('data.root is empty: pass --config.data.root=FOLDER')
        # Saved absolute, so that the run can be evaluated or plotted from any directory.
        cfg.data.root = os.path.abspath(cfg.data.root)
        seeds = config_lib.run_seeds(cfg)
        test_name = cfg.data.test.subset
        show = progress and procs.primary
        # The test split is read after the training features are packed (and, on the device
        # path, freed from the host): the host never holds both.
        names, train_split, eval_splits = _load_training(cfg, procs, progress=show)

        built = training.build(cfg, names)
        devices = distributed.training_devices(cfg.train.num_devices)
        if cfg.train.batch_size % len(devices):
            raise UserError(f'batch size {cfg.train.batch_size} does not divide {len(devices)} '
                            'devices')
        mesh = training.make_mesh(devices)
        replicated = training.replicated(mesh)
        rows_per_process = cfg.train.batch_size // procs.count
        rows = slice(procs.index * rows_per_process, (procs.index + 1) * rows_per_process)
        fingerprint = data_splits.data_fingerprint(train_split)

        run.manager(cfg, num_seeds=len(seeds))
        loop_state, start = _restore_or_start(run, cfg, names, built, replicated, fingerprint,
                                              procs)
        batchers, table, offsets = _training_data(cfg, train_split, seeds, devices, replicated,
                                                  procs)
        del train_split   # on the device path, the table is now the only copy
        eval_splits[test_name] = _load_test(cfg, names, procs, progress=show)

        run.restart_metrics(start)   # first: it may refuse a damaged log, changing nothing
        run.write_config(cfg)
        run.open_events(seeds)       # TensorBoard's view of the rows kept, then of each new one
        step_fn = training.compile_train_step(built.method, built.model, built.tx, built.hp, mesh,
                                           gather=table is not None)
        evaluate = _Evaluations(cfg, eval_splits, built.model, run, seeds) \
            if procs.primary else None
        # The evaluators hold packed copies of the evaluation splits, and the report needs only
        # their video counts: drop the features, or the test split (0.58 GB on THUMOS'14)
        # stays in memory twice for the whole run.
        eval_splits = {name: dataclasses.replace(split, features=[])
                       for name, split in eval_splits.items()}
        select_key = best_key(cfg)
        sharding = training.batch_sharding(mesh)

        def make_batch(step: int) -> dict:
            return pipeline.seed_batch(batchers, step, rows=rows, offsets=offsets)

        def last_good() -> str:
            run.wait()
            steps = run.steps()
            return f'step {steps[-1]} in {workdir}' if steps else 'none'

        def save(step: int, scalars: dict | None) -> None:
            """Checks and saves the loop state; ``scalars`` (evaluation steps) are the primary's
            metrics, of which every process needs the selecting one for the retention."""
            if scalars is not None and select_key and procs.count > 1:
                chosen = np.asarray(scalars.get(select_key, [0.0] * len(seeds))
                                    if procs.primary else [0.0] * len(seeds), np.float64)
                chosen = distributed.broadcast(chosen).tolist()
                scalars = dict(scalars, **{select_key: chosen}) if procs.primary else \
                    {select_key: chosen}
            if not checkpoints.save_checkpoint(run, step, loop_state, cfg, names,
                                              fingerprint=fingerprint, metrics=scalars):
                raise TrainingDiverged(f'non-finite parameters after step {step}; last good '
                                       f'checkpoint: {last_good()}')

        num_steps = cfg.train.num_steps
        bar = tqdm(total=num_steps, initial=start, disable=not show, unit='step',
                   bar_format=BAR_FORMAT)
        stream = pipeline.prefetch(make_batch, start, num_steps,
                                   buffer_size=cfg.train.prefetch,
                                   num_workers=1 if table is not None
                                   else cfg.train.prefetch_workers)
        window_start, window_time, last_map = start, time.perf_counter(), None
        try:
            for index, host_batch in stream:
                step = index + 1
                loop_state['train'], loop_state['sums'] = step_fn(
                    loop_state['train'], loop_state['sums'],
                    distributed.global_batch(host_batch, sharding), table)
                if step % cfg.train.log_every_steps == 0 or step == num_steps:
                    per_seed = training.host_metrics(loop_state['sums'])   # waits for the device
                    if not all(math.isfinite(v) for m in per_seed for v in m.values()):
                        raise TrainingDiverged(
                            f'non-finite loss between steps {window_start + 1} and {step}; '
                            f'last good checkpoint: {last_good()}')
                    rate = (step - window_start) / (time.perf_counter() - window_time)
                    for seed, values in zip(seeds, per_seed):
                        run.append_metrics({'step': step, 'split': 'train', 'seed': seed,
                                            **values, 'steps_per_second': rate,
                                            'learning_rate': _learning_rate(cfg, step)})
                    loop_state['sums'] = jax.tree.map(jnp.zeros_like, loop_state['sums'])
                    bar.set_description_str(
                        _postfix(_mean_over_seeds(per_seed), rate, last_map), refresh=False)
                    window_start = step
                if step % cfg.eval.every_steps == 0 or step == num_steps:
                    scalars = evaluate(loop_state['train'], step) if evaluate else {}
                    if scalars:
                        last_map = _selection_map(scalars)
                    save(step, scalars)
                elif step % cfg.checkpoint.every_steps == 0:
                    save(step, None)
                if step % cfg.train.log_every_steps == 0:
                    window_time = time.perf_counter()   # the rate leaves evaluations out
                bar.update(1)
        finally:
            stream.close()
            bar.close()
        if not procs.primary:
            return {}
        result = summary.run_report(
            run.read_metrics(), seeds=seeds, select=cfg.checkpoint.select,
            test_split=test_name, num_steps=num_steps, metric=cfg.checkpoint.best_metric,
            mode=cfg.checkpoint.best_mode,
            videos={name: len(split) for name, split in eval_splits.items()},
            class_names=names, protocol='seconds')
        write_json_atomic(os.path.join(run.path, REPORT_FILE), result, indent=1)
        return result


def _check_init_from(cfg) -> None:
    """Refuses, before anything is read or written, a ``train.init_from`` run of another
    method: its parameters cannot start this one."""
    if not cfg.train.init_from:
        return
    source = resolve(cfg.train.init_from)[0]
    found = RunDir(source).read_config().method
    if found != cfg.method:
        raise UserError(f'{cfg.train.init_from}: a run of method {found}; this config trains '
                        f'{cfg.method} (train.init_from needs a run of the same method)')


def _init_from(cfg, names, built) -> training.TrainState:
    """Every seed's state starting from another run's best parameters (fresh optimiser)."""
    source = load_checkpoint(cfg.train.init_from)
    if source.names != names:
        raise UserError(f'{cfg.train.init_from}: classes differ from the data set')
    found = jax.tree.map(np.shape, source.state.params)
    wanted = jax.tree.map(lambda x: np.shape(x)[1:], built.state.params)
    if found != wanted:
        raise UserError(f'{cfg.train.init_from}: parameter shapes {found} do not fit this '
                        f'config ({wanted}): check data.feature_dim and model.embed_dim')
    params = jax.tree.map(lambda p, s: jnp.broadcast_to(p, s.shape), source.state.params,
                          built.state.params)
    opt_state = jax.vmap(built.tx.init)(params)
    note(f'initialised from {cfg.train.init_from} (step {source.step})')
    return built.state.replace(params=params, opt_state=opt_state)

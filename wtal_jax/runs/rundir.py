"""The run directory, as one object that never loses or mixes a user's work.

Layout of ``WORKDIR``::

    config.json        the resolved config (validated again whenever it is read)
    metrics.jsonl      one JSON row per training log and per evaluation, in step order
    checkpoints/STEP/  orbax checkpoints (see ``checkpoints``)
    report.json        the final report of a training run
    .lock              held (flock) by the one process that writes this run
    damaged_checkpoints/STEP/  steps a resumed training found damaged, set aside

:class:`RunDir` owns all of it: one writer at a time (a second is refused with the holder's
process id; the kernel releases the lock of a killed process, so a stale lock never blocks),
one checkpoint manager (closed on exit), checksummed restore with fallback to the newest intact
step, a crash-safe metrics log, and the check that a resumed run is the same run on the same
data. Every problem is a one-line :class:`~wtal_jax.errors.UserError`, or, where the system
refused a write (a full disk), a one-line ``OSError`` naming the file or folder.
"""

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax

from wtal_jax import config as config_lib
from wtal_jax import io_utils
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic, write_text_atomic
from wtal_jax import method as method_lib
from wtal_jax import training
from wtal_jax.runs import checkpoints, orbax_logs

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
REPORT_FILE = 'report.json'
LOCK_FILE = '.lock'
DAMAGED_DIR = 'damaged_checkpoints'

# Fields that may change between a run and its resumption: how long, how often, where from,
# and how the work is spread over devices and host threads.
RESUMABLE_CHANGES = ('train.num_steps', 'train.log_every_steps', 'train.prefetch',
                     'train.prefetch_workers', 'train.num_devices', 'train.data_on_device',
                     'train.device_memory_fraction', 'eval.every_steps', 'eval.chunk_segments',
                     'checkpoint.every_steps', 'data.root')


# A config is sections of fields whose values are numbers, names or lists of them: JSON nested
# deeper than this was not written by us, and could make the config's own checks recurse.
MAX_CONFIG_NESTING = 8


def _nesting(value) -> int:
    """How deeply JSON objects and lists nest in ``value`` (0 for a number), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


def warn(message: str) -> None:
    """One line on stderr for something the user should know but that does not stop us."""
    print(f'warning: {message}', file=sys.stderr)


def _flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def config_changes(saved, wanted, ignore=()) -> list[str]:
    """``'key: old -> new'`` for every field that differs between two configs."""
    a, b = _flatten(config_lib.to_dict(saved)), _flatten(config_lib.to_dict(wanted))
    return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and k not in ignore]


class RunDir:
    """One run directory; use as a context manager.

    Args:
      path: the folder (created when ``write`` and absent).
      write: this command writes the run (train, convert): take the lock.
      primary: False on the other processes of a multi-process run, which write nothing but
        their share of the checkpoints (orbax coordinates them) and take no lock.
      barrier: ``barrier(name)`` waits for every process of a multi-process run
        (``distributed.barrier``); the writers of such a run meet there around the primary's
        moves of damaged steps, so that no process reads a step as it moves or keeps it listed.
        None (one process): no waiting.
    """

    def __init__(self, path: str, *, write: bool = False, primary: bool = True,
                 barrier: Callable[[str], None] | None = None):
        self.path = os.path.abspath(path)
        self.write = write
        self.primary = primary
        self._barrier = barrier or (lambda name: None)
        self._manager = None
        self._orbax_logs = None
        self._saving = None   # the step whose asynchronous save may still be running
        self._write_failed = False
        self._lock = None
        self._events = None   # TensorBoard's view of the metrics log (open_events)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UserError(f'{path}: exists and is not a folder (a run directory is a folder)')
        if write:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise UserError(f'{path}: cannot create the run folder ({e.strerror})') from None
            if primary:
                self._acquire_lock()
        elif not os.path.isdir(self.path):
            raise UserError(f'{path}: no such run directory')

    # -- lifetime --------------------------------------------------------------------------

    def __enter__(self) -> 'RunDir':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except (OSError, UserError) as e:   # the error on its way out is the one to report
            warn(_one_line(e))

    def close(self) -> None:
        """Waits for pending checkpoint writes, closes the manager, releases the lock.

        Raises:
          OSError: the last checkpoint could not be written (see :meth:`wait`).
        """
        try:
            if self._events is not None:
                events, self._events = self._events, None
                events.close()
            if self._manager is not None:
                try:
                    self.wait()
                finally:
                    manager, self._manager = self._manager, None
                    self._writing(manager.close)
        finally:
            if self._orbax_logs is not None:
                if self._write_failed:
                    self._orbax_logs.silence()   # and stays attached: see silence()
                else:
                    self._orbax_logs.detach()
                    for line in self._orbax_logs.take():
                        warn(f'orbax: {line}')
                self._orbax_logs = None
            if self._lock is not None:
                self._lock.close()  # closing the descriptor releases the flock
                self._lock = None

    def _acquire_lock(self) -> None:
        lock = open(os.path.join(self.path, LOCK_FILE), 'a+')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or 'another process'
            lock.close()
            raise UserError(f'{self.path} is in use by {holder}; wait for it to finish or use '
                            'another --workdir') from None
        lock.seek(0)
        lock.truncate()
        command = ' '.join(os.path.basename(a) if i == 0 else a
                           for i, a in enumerate(sys.argv))[:200]
        lock.write(f'process {os.getpid()} on {socket.gethostname()} ({command}, since '
                   f'{time.strftime("%Y-%m-%d %H:%M:%S")})\n')
        lock.flush()
        self._lock = lock

    # -- config ----------------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, CONFIG_FILE)

    def has_config(self) -> bool:
        return os.path.exists(self.config_path)

    def read_config(self):
        """The config the run was trained (or converted) with, validated."""
        path = self.config_path
        if io_utils.file_problem(path) == 'file not found':
            raise UserError(f'{path}: not found; is {self.path} a wtal_jax run directory?')
        try:   # bounded, and every way JSON can be wrong said in one line
            values = io_utils.read_json(path, what='a run config')
        except UserError as e:
            reason = str(e).removeprefix(f'{path}: ')
            raise UserError(f'{path}: unreadable config ({reason})') from None
        if _nesting(values) > MAX_CONFIG_NESTING:   # before anything walks it recursively
            raise UserError(f'{path}: unreadable config (nested too deeply)')
        return config_lib.from_dict(values, source=path)

    def write_config(self, cfg) -> None:
        if self.primary:
            write_json_atomic(self.config_path, config_lib.to_dict(cfg), indent=2)

    def check_same_run(self, cfg) -> None:
        """Refuses to resume under a config that would change what the run trains."""
        changed = config_changes(self.read_config(), cfg, RESUMABLE_CHANGES)
        if changed:
            raise UserError(f'{self.path} holds a run trained with another config '
                            f'({", ".join(changed[:4])}); use a new --workdir to train this one')

    # -- metrics log -----------------------------------------------------------------------

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.path, METRICS_FILE)

    def read_metrics(self, *, quiet: bool = False) -> list[dict]:
        """All rows of ``metrics.jsonl`` in order.

        Each row is written as one line with its newline in one call, so only a crash while
        writing can leave a last line without one: that torn line is dropped with a warning.
        Damage anywhere else is an error.
        """
        try:
            with open(self.metrics_path, encoding='utf-8') as f:
                lines = f.read().split('\n')
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f'{self.metrics_path}: unreadable ({e})') from None
        if lines[-1]:
            if not quiet:
                warn(f'{self.metrics_path}: dropped a torn last line {len(lines)} (a crash '
                     'while writing it)')
        rows = []
        for number, line in enumerate(lines[:-1], 1):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict) or not isinstance(row.get('step'), int):
                raise UserError(f'{self.metrics_path}: line {number} is not a metrics row')
            rows.append(row)
        return rows

    def restart_metrics(self, step: int) -> None:
        """Keeps the rows up to ``step``: the rows a resumed run has not redone. A fresh start
        (0) keeps none, without reading them (they may be those of a crashed start)."""
        if not self.primary:
            return
        rows = [r for r in self.read_metrics() if r['step'] <= step] if step else []
        if rows or os.path.exists(self.metrics_path):
            write_text_atomic(self.metrics_path, ''.join(json.dumps(r) + '\n' for r in rows))

    def append_metrics(self, row: dict) -> None:
        """Appends one row, flushed to the operating system at once (a killed process loses
        nothing it has written); ``sync`` makes it durable at checkpoints."""
        if not self.primary:
            return
        try:
            with open(self.metrics_path, 'a', encoding='utf-8') as f:
                f.write(json.dumps(row, allow_nan=False) + '\n')
                f.flush()
        except OSError as e:   # a full disk: a torn last line at worst, dropped on resume
            raise OSError(e.errno, f'{e.strerror or e} (the row of step {row["step"]} not '
                                   'written)', self.metrics_path) from None
        if self._events is not None:
            self._events.add(row)

    def open_events(self, seeds) -> None:
        """TensorBoard event files in ``events/`` (primary only): written anew from the rows
        of ``metrics.jsonl`` (call after :meth:`restart_metrics`), then with every row appended;
        closed with the RunDir (:mod:`wtal_jax.runs.tensorboard`)."""
        if self.primary:
            from wtal_jax.runs import tensorboard
            self._events = tensorboard.Events(os.path.join(self.path, tensorboard.EVENTS_DIR),
                                              seeds, self.read_metrics(quiet=True))

    def sync_metrics(self) -> None:
        if self.primary and os.path.exists(self.metrics_path):
            with open(self.metrics_path, 'rb+') as f:
                os.fsync(f.fileno())

    # -- checkpoints -----------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.path, checkpoints.CHECKPOINT_DIR)

    def manager(self, cfg=None, *, num_seeds: int = 1):
        """The run's one checkpoint manager (opened on first use, closed with the RunDir).

        Writers pass the config (retention: ``checkpoint.keep`` latest plus each seed's best by
        ``checkpoint.select``); readers open it read-only.
        """
        if self._manager is None:
            folder = self.checkpoint_dir
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise UserError(f'{folder}: exists and is not a folder')
            if self.write:
                if cfg is None:
                    raise ValueError('a writer opens its manager with the config first')
                self._set_aside_unreadable_metrics()
                self._barrier('wtal_jax:checkpoints-checked')
            elif not os.path.isdir(folder):
                raise UserError(f'{self.path}: no checkpoint in {checkpoints.CHECKPOINT_DIR}/')
            logs = orbax_logs.HeldErrorLogs().attach()
            try:
                if self.write:
                    manager = checkpoints.open_manager(
                        folder, keep=cfg.checkpoint.keep, best_key=best_key(cfg),
                        best_mode=cfg.checkpoint.best_mode, num_seeds=num_seeds)
                else:
                    manager = checkpoints.open_manager(folder, keep=1, read_only=True)
            except BaseException:
                logs.detach()
                raise
            self._manager, self._orbax_logs = manager, logs
        return self._manager

    def _set_aside_unreadable_metrics(self) -> None:
        """Sets aside the steps whose metrics item is damaged: a writer's manager reads every
        step's metrics (to keep each seed's best) and would stop at the first such step."""
        if not (self.primary and os.path.isdir(self.checkpoint_dir)):
            return
        for name in sorted(os.listdir(self.checkpoint_dir)):
            if name.isdigit():
                problem = checkpoints.step_metrics_problem(
                    os.path.join(self.checkpoint_dir, name))
                if problem:
                    warn(f'{self.checkpoint_dir}: step {name}: {problem}; moved to '
                         f'{self._set_aside(int(name))}')

    def _set_aside(self, step: int) -> str:
        """Moves a damaged step out of the checkpoints into ``damaged_checkpoints/``, where it
        neither blocks a new save of that step nor passes for a good checkpoint."""
        folder = os.path.join(self.path, DAMAGED_DIR)
        os.makedirs(folder, exist_ok=True)
        target, n = os.path.join(folder, str(step)), 1
        while os.path.exists(target):
            target, n = os.path.join(folder, f'{step}.{n}'), n + 1
        shutil.move(os.path.join(self.checkpoint_dir, str(step)), target)
        return target

    def steps(self) -> list[int]:
        """Saved steps, oldest first ([] when there is no checkpoint folder)."""
        if self._manager is None and not os.path.isdir(self.checkpoint_dir):
            return []
        return sorted(self.manager().all_steps())

    def best_step(self, key: str, mode: str, seed: int = 0) -> int | None:
        """The saved step with the best value of metric ``key`` for ``seed``, or None.

        A step whose metrics cannot be read is left out, with a warning.
        """
        manager = self.manager()
        scored = []
        for step in sorted(manager.all_steps()):
            problem = checkpoints.step_metrics_problem(os.path.join(self.checkpoint_dir,
                                                                      str(step)))
            if problem:
                warn(f'{self.checkpoint_dir}: step {step}: {problem}; left out of the choice '
                     'of the best step')
                continue
            metrics = manager.metrics(step)
            if metrics and key in metrics:
                scored.append((metrics[key][seed], step))
        if not scored:
            return None
        return (max if mode == 'max' else min)(scored)[1]

    def save(self, step: int, state, meta: dict, metrics: dict | None) -> None:
        """Starts an asynchronous save of ``state`` with ``meta`` (which holds its checksums).

        Raises:
          OSError: this step, or the previous one still being written, could not be written
            (see :meth:`wait`).
        """
        self.wait()   # the previous save's failure, named as its own
        self.sync_metrics()  # rows up to this step are durable before it is
        self._saving = step
        self._writing(lambda: checkpoints.save(self.manager(), step, state, meta, metrics))

    def wait(self) -> None:
        """Waits until the checkpoint being written asynchronously is complete.

        Raises:
          OSError: the system refused the write (a full disk): one line naming the checkpoint
            folder and the step. Orbax commits a step by renaming it at the end, so the steps
            saved before it are intact.
        """
        if self._manager is not None:
            self._writing(self._manager.wait_until_finished)
        self._saving = None

    def _writing(self, action) -> None:
        """Runs an Orbax call that writes, turning a refused write into one OSError. Orbax
        may raise one failure several times (from each of its threads): said once."""
        try:
            action()
        except Exception as e:
            failure = orbax_logs.write_failure(e)
            if failure is None:
                raise
            number, reason = failure
            step, self._saving = self._saving, None
            if self._orbax_logs is not None:
                self._orbax_logs.take()   # Orbax's logs of this failure: said in one line
            if self._write_failed:
                return
            self._write_failed = True
            what = 'the last checkpoint' if step is None else f'checkpoint of step {step}'
            raise OSError(number, f'{what} not saved ({reason}); the steps saved before it '
                                  'are intact', self.checkpoint_dir) from None

    def restore(self, abstract_state, *, step: int | None = None,
                candidates: list[int] | None = None, quiet: bool = False):
        """Restores the first intact step among ``candidates`` (default: ``step`` alone, or
        every saved step, newest first); returns (state, meta, step).

        ``abstract_state``: the structure to restore into, or a function of a step's meta
        returning it.

        A damaged step is skipped with a one-line warning; none intact is a UserError.
        """
        manager = self.manager()
        saved = sorted(manager.all_steps(), reverse=True)
        if step is not None:
            if step not in saved:
                raise UserError(f'{self.path}: no checkpoint at step {step} (saved: '
                                f'{", ".join(map(str, sorted(saved))) or "none"})')
            candidates = [step]
        candidates = saved if candidates is None else candidates
        if not candidates:
            raise UserError(f'{self.path}: no checkpoint in {checkpoints.CHECKPOINT_DIR}/')
        problems = []
        for candidate in candidates:
            try:
                state, meta = checkpoints.restore(manager, candidate, abstract_state)
            except checkpoints.CorruptCheckpoint as e:
                problems.append((candidate, str(e)))
                if self._orbax_logs is not None:
                    self._orbax_logs.take()   # Orbax's logs of this damage: said in one line
                continue
            self._report_damaged(problems, candidate, quiet=quiet)
            return state, meta, candidate
        raise UserError(f'{self.checkpoint_dir}: no intact checkpoint '
                        f'({"; ".join(p for _, p in problems)})')

    def _report_damaged(self, problems: list[tuple[int, str]], restored: int, *,
                        quiet: bool) -> None:
        """One warning per damaged step tried before ``restored``. A writer (a resumed
        training) sets aside those newer than ``restored``: it will save those steps again."""
        newer = self.write and any(step > restored for step, _ in problems)
        if newer:
            self._barrier('wtal_jax:damaged-read')   # no process still reads a step to move
        set_aside = newer and self.primary
        fallbacks = [s for s, _ in problems[1:]] + [restored]
        for (step, problem), fallback in zip(problems, fallbacks):
            moved = f'; moved to {self._set_aside(step)}' \
                if set_aside and step > restored else ''
            if not quiet and self.primary:   # said once, by the process that moves
                warn(f'{self.checkpoint_dir}: {problem}{moved}; falling back to step {fallback}')
        if newer:
            self._barrier('wtal_jax:damaged-moved')
            self._manager.reload()   # every process: the moved steps are no longer listed

    def restore_meta(self, step: int) -> dict:
        try:
            return checkpoints.restore_meta(self.manager(), step)
        except checkpoints.CorruptCheckpoint as e:
            raise UserError(f'{self.checkpoint_dir}: {e}') from None


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f'{os.fsdecode(error.filename)}: {error.strerror}'
    return str(error)


def best_key(cfg) -> str | None:
    """The metric that picks the best step under ``checkpoint.select`` (None for 'last')."""
    select = cfg.checkpoint.select
    if select == 'last':
        return None
    split = 'selection' if select == 'selection' else cfg.data.test.subset
    return checkpoints.metric_key(split, cfg.checkpoint.best_metric)


# ---------------------------------------------------------------------------------------------
# One seed of a run's checkpoint, for evaluate, detect, plot and the notebooks


class Checkpoint(NamedTuple):
    """A restored checkpoint: its run's config, classes, network, one seed's state, step."""
    cfg: object
    names: tuple[str, ...]
    model: object
    state: training.TrainState
    step: int
    workdir: str
    seed: int


def resolve(path: str) -> tuple[str, int | None]:
    """A run directory or a ``RUN/checkpoints/STEP`` folder -> (run directory, step or None)."""
    path = os.path.abspath(path)
    if os.path.basename(os.path.dirname(path)) == checkpoints.CHECKPOINT_DIR and \
            os.path.basename(path).isdigit():
        return os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
    return path, None


def _seed_index(cfg, seed: int | None, workdir: str) -> int:
    seeds = config_lib.run_seeds(cfg)
    if seed is None:
        if len(seeds) > 1:
            raise UserError(f'{workdir} holds {len(seeds)} seeds ({", ".join(map(str, seeds))})'
                            ': choose one with --seed')
        return 0
    if seed not in seeds:
        raise UserError(f'{workdir} has no seed {seed} (it holds {", ".join(map(str, seeds))})')
    return seeds.index(seed)


def load_checkpoint(path: str, *, which: str = 'best', seed: int | None = None,
                    overrides=()) -> Checkpoint:
    """Restores one seed of a run directory's best or latest checkpoint (or a given step).

    'best' is the step chosen by the run's ``checkpoint.select`` rule for that seed ('last'
    runs: the latest). A damaged step is skipped with a warning, falling back to the newest
    intact one. ``overrides``: ``KEY=VALUE`` applied to the saved config (e.g. a moved
    ``data.root``).
    """
    workdir, step = resolve(path)
    with RunDir(workdir) as run:
        cfg = run.read_config()
        config_lib.apply_overrides(cfg, overrides, source=run.config_path)
        index = _seed_index(cfg, seed, workdir)
        saved = sorted(run.steps(), reverse=True)
        if not saved:
            raise UserError(f'{workdir}: no checkpoint in {checkpoints.CHECKPOINT_DIR}/')
        candidates = None if step is None else [step]
        key = best_key(cfg)
        if step is None and which == 'best' and key:
            best = run.best_step(key, cfg.checkpoint.best_mode, index)
            if best is not None:
                candidates = [best] + [s for s in saved if s != best]
        if step is not None and step not in saved:
            raise UserError(f'{workdir}: no checkpoint at step {step} (saved: '
                            f'{", ".join(map(str, sorted(saved)))})')
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        state, meta, found = run.restore(
            lambda meta: checkpoints.abstract_state(cfg, tuple(meta['class_names']), device),
            candidates=candidates)
    names = tuple(meta['class_names'])
    model = method_lib.load(cfg.method).model(cfg, len(names))
    return Checkpoint(cfg, names, model, training.unstack_state(state['train'], index), found,
                      workdir, config_lib.run_seeds(cfg)[index])

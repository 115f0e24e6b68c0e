"""The run directory, as one object that never loses or mixes a user's work.

Layout of ``WORKDIR``::

    config.json        the resolved config (validated again whenever it is read)
    metrics.jsonl      one JSON row per training log and per evaluation, in step order
    checkpoints/STEP/  orbax checkpoints (see ``checkpoints``)
    report.json        the final report of a training run
    .lock              names the one process that writes this run (which locks the folder)
    damaged_checkpoints/STEP/  steps a resumed training found damaged, set aside

:class:`RunDir` owns all of it: one writer at a time (the writer locks the run folder itself,
so deleting anything inside it lets no second writer in; a second is refused with the holder's
process id; the kernel releases the lock of a killed process, so a stale lock never blocks),
one checkpoint manager (closed on exit), checksummed restore with fallback to the newest intact
step, a crash-safe metrics log, and the check that a resumed run is the same run on the same
data. Every problem is a one-line :class:`~wtal_jax.errors.UserError`, or, where the system
refused a write (a full disk), a one-line ``OSError`` naming the file or folder.

One module of ~600 lines on purpose: every way into a run (its writer, its readers, one seed's
checkpoint for evaluate, detect and plot) goes through this one object; the log's format is
``metrics_log``, a checkpoint's content ``checkpoints``.
"""

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax

from wtal_jax import config as config_lib
from wtal_jax import io_utils
from wtal_jax import method as method_lib
from wtal_jax import training
from wtal_jax.errors import UserError
from wtal_jax.io_utils import write_json_atomic
from wtal_jax.runs import checkpoints, metrics_log, orbax_logs, summary

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


# A reader that finds a step failing waits this long (seconds) for it to vanish before calling
# it damaged: a training deleting it (Orbax unlinks a step's few files, then its folder) takes
# milliseconds. A damaged step costs a reader this once.
VANISH_WAIT_S = 1.0
# How often a reader lists the steps again when those it tried were deleted as it read them:
# a training with checkpoint.keep=1 that saves every step may delete each step within a read
# (half the reads of the tiny test run); real runs save every hundreds of steps.
RELISTS = 20


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


class Restored(NamedTuple):
    """A checkpoint read back intact: its state, its JSON meta and its step."""
    state: object
    meta: dict
    step: int


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
        self._lock = contextlib.ExitStack()
        self._lock_intact = lambda: None
        self._created = False
        problem = _utf8_problem(self.path)
        if problem:   # found now, not at the first save, where Orbax's array store fails
            raise UserError(f'{os.fsencode(self.path).decode("utf-8", "backslashreplace")}: '
                            f'not valid UTF-8 ({problem}); the checkpoints\' array store '
                            'takes UTF-8 paths only: choose a run folder with a UTF-8 path')
        self._events = None   # TensorBoard's view of the metrics log (open_events)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UserError(f'{path}: exists and is not a folder (a run directory is a folder)')
        if write:
            # Only the primary removes a new folder it left empty: the other processes of a run
            # may end while it still writes.
            self._created = primary and not os.path.exists(self.path)
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise UserError(f'{path}: cannot create the run folder ({e.strerror})') from None
            if primary:
                try:
                    self._lock_intact = self._lock.enter_context(io_utils.hold_lock(
                        os.path.join(self.path, LOCK_FILE), folder=self.path,
                        busy=lambda holder: f'{self.path} is in use by {holder}; wait for it '
                                            'to finish or use another --workdir'))
                except BaseException:
                    if self._created:
                        _remove_empty(self.path)
                    raise
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
            self._lock.close()   # releases the lock and removes the file naming the holder
            if self._created:    # a new run that wrote nothing leaves no folder behind
                _remove_empty(self.path)

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
            self._lock_intact()
            write_json_atomic(self.config_path, config_lib.to_dict(cfg), indent=2)

    def check_same_run(self, cfg) -> None:
        """Refuses to resume under a config that would change what the run trains. The seeds
        are compared as the run trains them (``seed=0`` and ``seeds=(0,)`` are one seed)."""
        saved = self.read_config()
        ignore = RESUMABLE_CHANGES
        if config_lib.run_seeds(saved) == config_lib.run_seeds(cfg):
            ignore += ('seed', 'seeds')
        changed = config_changes(saved, cfg, ignore)
        if changed:
            raise UserError(f'{self.path} holds a run trained with another config '
                            f'({", ".join(changed[:4])}); use a new --workdir to train this one')

    # -- metrics log -----------------------------------------------------------------------

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.path, METRICS_FILE)

    def read_metrics(self, *, quiet: bool = False, upto: int | None = None) -> list[dict]:
        """The rows of ``metrics.jsonl`` in order (see :func:`metrics_log.read`)."""
        return metrics_log.read(self.metrics_path, quiet=quiet, upto=upto)

    def restart_metrics(self, step: int) -> None:
        """Keeps the rows up to ``step``: the rows a resumed run has not redone. A fresh start
        (0) keeps none, without reading them (they may be those of a crashed start)."""
        if not self.primary:
            return
        rows = self.read_metrics(upto=step) if step else []
        self._lock_intact()
        metrics_log.rewrite(self.metrics_path, rows)

    def append_metrics(self, row: dict) -> None:
        """Appends one row, at once (see :func:`metrics_log.append`)."""
        if not self.primary:
            return
        self._lock_intact()
        metrics_log.append(self.metrics_path, row)
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
        if self.primary:
            metrics_log.sync(self.metrics_path)

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
                    manager = self._listing(lambda: checkpoints.open_manager(
                        folder, keep=1, read_only=True))
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
        """The saved step with the best value of metric ``key`` for ``seed`` (by
        :func:`~wtal_jax.runs.summary.best_index`, the report's rule: of equal values, the
        earliest), or None.

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
        return scored[summary.best_index([value for value, _ in scored], mode)][1]

    def save(self, step: int, state, meta: dict, metrics: dict | None) -> None:
        """Starts an asynchronous save of ``state`` with ``meta`` (which holds its checksums).

        Raises:
          OSError: this step, or the previous one still being written, could not be written
            (see :meth:`wait`).
        """
        self.wait()   # the previous save's failure, named as its own
        self._lock_intact()
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
                candidates: list[int] | None = None, quiet: bool = False) -> 'Restored':
        """Restores the first intact step among ``candidates`` (default: ``step`` alone, or
        every saved step, newest first).

        ``abstract_state``: the structure to restore into, or a function of a step's meta
        returning it.

        A damaged step is skipped with a one-line warning; none intact is a UserError. A reader
        (evaluate, detect, plot) may read while a training saves and deletes steps: a step that
        fails because it vanished (:meth:`_vanished`) is no damaged step; once the candidates
        are spent, the steps saved meanwhile are listed and tried, newest first.
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
        problems, tried = [], set()
        for _ in range(RELISTS):
            vanished = []
            for candidate in (c for c in candidates if c not in tried):
                tried.add(candidate)
                try:
                    state, meta = self._read_step(manager, candidate, abstract_state)
                except checkpoints.CorruptCheckpoint as e:
                    if self._orbax_logs is not None:
                        self._orbax_logs.take()   # Orbax's logs of this failure: said below
                    if self._vanished(candidate):
                        vanished.append(candidate)
                    else:
                        problems.append((candidate, str(e)))
                    continue
                self._report_damaged(problems, candidate, quiet=quiet)
                return Restored(state, meta, candidate)
            if not vanished:
                break
            if step is not None:
                raise UserError(f'{self.path}: no checkpoint at step {step} any more (the '
                                'training writing this run deleted it as it was read)')
            self._listing(manager.reload)
            candidates = sorted(manager.all_steps(), reverse=True)
        found = '; '.join(p for _, p in problems) or 'every step was deleted as it was read'
        raise UserError(f'{self.checkpoint_dir}: no intact checkpoint ({found})')

    def _listing(self, action):
        """``action()``, an Orbax call that lists the steps (stating each), tried again where a
        step vanished as it was listed: a reader's race with a training's clean-up."""
        for attempt in range(RELISTS):
            try:
                return action()
            except (FileNotFoundError, NotADirectoryError):   # deleted between two looks
                if self.write or attempt == RELISTS - 1:
                    raise

    def _read_step(self, manager, step: int, abstract_state):
        """(state, meta) of one step, verified; a reader pins it first, so that a training
        writing this run keeps it until the read is done (``checkpoints.ReaderPins``)."""
        if self.write:
            return checkpoints.restore(manager, step, abstract_state)
        with checkpoints.pin(os.path.join(self.path, checkpoints.READERS_DIR), step):
            if not os.path.isdir(os.path.join(self.checkpoint_dir, str(step))):
                raise checkpoints.CorruptCheckpoint(f'step {step}: deleted before it was read')
            return checkpoints.restore(manager, step, abstract_state)

    def _vanished(self, step: int) -> bool:
        """Whether ``step``, which failed to read, is gone or going rather than damaged: a
        training writing this run deletes the steps its retention drops (their files first,
        then the folder). A reader waits up to VANISH_WAIT_S for the folder to go; a writer
        deletes only its own steps, so for it a failure is damage."""
        if self.write:
            return False
        path = os.path.join(self.checkpoint_dir, str(step))
        deadline = time.monotonic() + VANISH_WAIT_S
        while os.path.isdir(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

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


def _utf8_problem(path: str) -> str | None:
    """Where the bytes of ``path`` stop being UTF-8 ('byte 0xff at 9'), or None."""
    data = os.fsencode(path)
    try:
        data.decode('utf-8')
    except UnicodeDecodeError as e:
        return f'byte 0x{data[e.start]:02x} at {e.start}'
    return None


def _remove_empty(folder: str) -> None:
    """Removes ``folder`` where it holds nothing but empty folders (``checkpoints/`` of a run
    refused before its first save)."""
    for base, _, _ in os.walk(folder, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(base)


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

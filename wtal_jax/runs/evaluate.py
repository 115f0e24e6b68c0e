"""Evaluating one seed of a run's checkpoint on a split (``wtal-jax evaluate``): the detections
(``results_SPLIT.json``) and every figure (``metrics_SPLIT.json``) written into the run.

The two files are one set: the metrics file names the step and seed and the results file's
SHA-256, is removed before the results file is replaced and written after it, so a metrics
file always describes the results file beside it; an interrupted evaluate leaves at most a
results file without its metrics.
"""

import hashlib
import json
import os
import tempfile
from typing import NamedTuple

import jax

from wtal_jax import config as config_lib
from wtal_jax.data import splits
from wtal_jax.io_utils import write_json_atomic
from wtal_jax.postprocess import snippet
from wtal_jax.postprocess.evaluator import Evaluator
from wtal_jax.runs import memory
from wtal_jax.runs.rundir import load_checkpoint


class Evaluated(NamedTuple):
    """What ``evaluate`` measured and wrote."""
    step: int
    seed: int
    split: str
    figures: dict           # the protocol report (postprocess.report.evaluate)
    results_path: str
    metrics_path: str


def output_paths(workdir: str, split: str, *, seed: int | None, protocol: str
                 ) -> tuple[str, str]:
    """(results, metrics) file of a split; ``_seedS`` for runs of several seeds, the protocol
    (other than 'seconds') in the metrics file's name."""
    suffix = '' if seed is None else f'_seed{seed}'
    tag = '' if protocol == 'seconds' else f'_{protocol}'
    return (os.path.join(workdir, f'results_{split}{suffix}.json'),
            os.path.join(workdir, f'metrics_{split}{suffix}{tag}.json'))


def _check_writable(folder: str) -> None:
    """Raises the OSError, naming ``folder``, where no file can be created in it (a read-only
    file system or folder): found by creating and removing an empty file, which also holds for
    root, whom permission bits do not stop."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix='.evaluate-', suffix='.tmp')
    except OSError as e:
        raise OSError(e.errno, f'{e.strerror or e} (evaluate writes its results into the run '
                               'folder; nothing evaluated)', folder) from None
    os.close(fd)
    os.unlink(probe)


def evaluate_run(source: str, *, which: str = 'best', seed: int | None = None,
                 split: str | None = None, protocol: str = 'seconds',
                 ambiguous: str | None = None, config_path: str | None = None, overrides=(),
                 progress: bool = True) -> Evaluated:
    """Evaluates a run directory's (or ``RUN/checkpoints/STEP``'s) checkpoint and writes its
    results and metrics files into the run.

    ``config_path``: evaluate under another config file (with ``overrides``); otherwise
    ``overrides`` apply to the run's saved config (e.g. a moved ``data.root``).
    """
    from wtal_jax.errors import UserError
    if ambiguous and protocol != 'snippet':
        raise UserError('--ambiguous applies to --protocol snippet only')
    dropped = snippet.load_ambiguous(ambiguous) if ambiguous else None
    ckpt = load_checkpoint(source, which=which, seed=seed,
                           overrides=() if config_path else overrides)
    cfg = config_lib.load_config(config_path, overrides) if config_path else ckpt.cfg
    device = jax.local_devices()[0]
    memory.check(memory.for_evaluation(cfg, len(ckpt.names)), [device], 'evaluate')
    name = split or cfg.data.test.subset
    several = len(config_lib.run_seeds(ckpt.cfg)) > 1
    results_path, metrics_path = output_paths(ckpt.workdir, name,
                                              seed=ckpt.seed if several else None,
                                              protocol=protocol)
    _check_writable(ckpt.workdir)   # before the work, not after it
    splits.prepare_dataset(cfg, progress=progress)
    data = splits.load_split(cfg, name, ckpt.names, progress=progress)
    evaluation = Evaluator(cfg, data, ckpt.model, split_name=name)(
        ckpt.state.params, protocol=protocol, ambiguous=dropped)
    text = json.dumps(evaluation.results, allow_nan=False)
    if os.path.exists(metrics_path):
        os.remove(metrics_path)   # no moment where it describes another results file
    write_json_atomic(results_path, evaluation.results)
    write_json_atomic(metrics_path, {
        'step': ckpt.step, 'split': name, 'seed': ckpt.seed,
        'results_file': os.path.basename(results_path),
        'results_sha256': hashlib.sha256(text.encode('utf-8')).hexdigest(),
        **evaluation.figures}, indent=1)
    return Evaluated(ckpt.step, ckpt.seed, name, evaluation.figures, results_path, metrics_path)

"""``wtal-jax show RUN``: what a run directory holds, read without changing it.

Its config (the fields that differ from its method's defaults first), the fingerprint of the
data it trained on, its seeds, the steps done, the checkpoints kept and the one each seed's
``checkpoint.select`` rule chooses (and why), and its report's table. A run that has not
finished (no ``report.json``), or that has no checkpoint yet (or none at all: a run directory
of ``convert-torch`` has one at step 0 and no metrics), is shown as far as it goes, saying what
is missing.
"""

import os

from wtal_jax import config as config_lib
from wtal_jax.errors import UserError
from wtal_jax.io_utils import read_json
from wtal_jax.runs import summary

REPORT_FILE = 'report.json'   # rundir.REPORT_FILE; rundir (and JAX) are imported when used

# Why a step is the selected one, under each checkpoint.select rule (among the kept steps).
RULES = {
    'selection': 'best {key} ({mode})',
    'last': 'the latest',
    'test': 'best {key} ({mode}), test-set selection',
}


def changed_fields(cfg) -> dict:
    """Dotted field -> {'default', 'value'} for every field of ``cfg`` that differs from the
    defaults of its method (``config.default_config(cfg.method)``), sorted by field."""
    from wtal_jax.runs.rundir import _flatten   # the flattening config_changes uses
    default = _flatten(config_lib.to_dict(config_lib.default_config(cfg.method)))
    values = _flatten(config_lib.to_dict(cfg))
    return {k: {'default': default.get(k), 'value': values[k]} for k in sorted(values)
            if values[k] != default.get(k)}


def _selected(run, cfg, steps: list[int]) -> list[dict]:
    """Per seed: the step ``load_checkpoint`` restores as 'best', and the value that chose it."""
    from wtal_jax.runs.rundir import best_key
    key, mode = best_key(cfg), cfg.checkpoint.best_mode
    chosen = []
    for index, seed in enumerate(config_lib.run_seeds(cfg)):
        step = run.best_step(key, mode, index) if key else None
        value = run.manager().metrics(step)[key][index] if step is not None else None
        chosen.append({'seed': seed, 'step': step if step is not None else steps[-1],
                       'metric': key if step is not None else None, 'value': value})
    return chosen


def _fingerprint(run, steps: list[int]) -> tuple[dict | None, str | None]:
    """(the training data's fingerprint from the latest checkpoint, or None; why none)."""
    if not steps:
        return None, 'no checkpoint'
    try:
        data = run.restore_meta(steps[-1]).get('data') or None
    except UserError as e:
        return None, f'unreadable ({e})'
    return data, None if data else 'not recorded (a converted checkpoint)'


def describe(path: str) -> dict:
    """Everything ``show`` says about the run directory ``path``, JSON-ready."""
    from wtal_jax.runs.rundir import RunDir, best_key
    with RunDir(path) as run:
        cfg = run.read_config()
        rows = run.read_metrics(quiet=True)
        steps = run.steps()
        data, no_data = _fingerprint(run, steps)
        selected = _selected(run, cfg, steps) if steps else []
    report_path = os.path.join(run.path, REPORT_FILE)
    report = read_json(report_path, what='a run report') if os.path.exists(report_path) else None
    return {
        'run': run.path, 'method': cfg.method, 'seeds': list(config_lib.run_seeds(cfg)),
        'changed': changed_fields(cfg), 'config': config_lib.to_dict(cfg),
        'data': data, 'data_missing': no_data,
        'num_steps': cfg.train.num_steps,
        'checkpointed_step': steps[-1] if steps else None,
        'logged_step': max((r['step'] for r in rows), default=None),
        'checkpoints': steps,
        'select': cfg.checkpoint.select,
        'rule': RULES[cfg.checkpoint.select].format(key=best_key(cfg),
                                                    mode=cfg.checkpoint.best_mode),
        'selected': selected,
        'report': report,
    }


def _value(value) -> str:
    text = repr(tuple(value)) if isinstance(value, list) else repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def format_run(shown: dict) -> str:
    """The text of :func:`describe` (80 columns, where the paths allow)."""
    seeds = shown['seeds']
    lines = [f"run {shown['run']}",
             f"method {shown['method']}; seed{'s' if len(seeds) > 1 else ''} "
             f"{', '.join(map(str, seeds))}",
             f"config: {len(shown['changed'])} fields differ from {shown['method']}'s defaults "
             '(config.json holds all):']
    lines += [f"  {key} = {_value(v['value'])} (default {_value(v['default'])})"
              for key, v in shown['changed'].items()]
    data = shown['data']
    lines.append(f"data: {data['videos']} training videos, fingerprint {data['sha256'][:12]}"
                 if data else f"data: fingerprint unknown: {shown['data_missing']}")
    logged = shown['logged_step']
    done = shown['checkpointed_step']
    lines.append(f"steps: {'none' if done is None else done} of {shown['num_steps']} "
                 'checkpointed; ' + ('no metrics logged' if logged is None else
                                     f'metrics logged to step {logged}'))
    if not shown['checkpoints']:
        lines.append('checkpoints: none')
    else:
        lines.append(f"checkpoints kept: {', '.join(map(str, shown['checkpoints']))}")
        lines.append(f"selected (checkpoint.select={shown['select']}): {shown['rule']}")
        for s in shown['selected']:
            why = f"{s['metric']} {s['value']:.4f}" if s['metric'] else 'the latest' + (
                '' if shown['select'] == 'last' else ': no evaluated checkpoint kept')
            lines.append(f"  seed {s['seed']}: step {s['step']} ({why})")
    if shown['report'] is None:
        lines.append(f'report: none ({REPORT_FILE} is written when training ends)')
    else:
        lines += ['report:', summary.format_report(shown['report'])]
    return '\n'.join(lines)

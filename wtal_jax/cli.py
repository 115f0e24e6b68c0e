"""The ``wtal-jax`` command (also ``python -m wtal_jax``).

Every subcommand takes ``--config.KEY=VALUE`` overrides where it takes a config. A problem with
the user's input ends in one line on stderr and exit status 2, never a traceback.
"""

import argparse
import importlib
import os
import sys
import types

from wtal_jax.errors import UserError


def _add_config_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument('--config', required=required,
                        help='config file (configs/*.py); fields overridable as '
                             '--config.section.field=value')
    parser.add_argument('--workdir', required=required, help='run directory')


def _config(args, overrides):
    from wtal_jax import config
    from wtal_jax.runs.rundir import RunDir
    if args.config:
        cfg = config.load_config(args.config, overrides)
    else:
        run = RunDir(args.workdir)
        cfg = run.read_config()
        config.apply_overrides(cfg, overrides, source=run.config_path)
    if getattr(args, 'seeds', None):
        cfg.seeds = parse_seeds(args.seeds)
    return cfg


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds 0,1,2,3,4`` (a list) or ``--seeds 5`` (a count: 0..4)."""
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise UserError(f'--seeds {text}: expected a count (5) or a list (0,1,2)') from None
    if len(values) == 1 and ',' not in text:
        if values[0] < 1:
            raise UserError(f'--seeds {text}: a count must be at least 1')
        return tuple(range(values[0]))
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise UserError(f'--seeds {text}: expected distinct non-negative seeds')
    return tuple(values)


def cmd_train(args, overrides) -> int:
    from wtal_jax.runs import distributed, loop, summary
    if not args.workdir:  # --config alone would train into nowhere; --workdir alone resumes
        raise UserError('train needs --workdir (and --config, unless resuming a run there)')
    procs = distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   auto=args.distributed_auto)
    cfg = _config(args, overrides)
    result = loop.train_and_evaluate(cfg, args.workdir, progress=not args.quiet)
    if result and procs.primary:
        print(summary.format_report(result))
        print(f'wrote {os.path.join(args.workdir, "report.json")}')
    return 0


def cmd_evaluate(args, overrides) -> int:
    """Evaluates one seed of a run directory's best (or a given) checkpoint on a split."""
    from wtal_jax import config as config_lib
    from wtal_jax.io_utils import write_json_atomic
    from wtal_jax.postprocess import evaluation
    from wtal_jax.runs import experiment
    source = args.checkpoint or args.workdir
    if not source:
        raise UserError('evaluate needs --workdir or --checkpoint')
    ckpt = experiment.load_checkpoint(source, which=args.which, seed=args.seed,
                                      overrides=() if args.config else overrides)
    cfg = config_lib.load_config(args.config, overrides) if args.config else ckpt.cfg
    split_name = args.split or cfg.data.test.subset
    experiment.prepare_dataset(cfg, progress=not args.quiet)
    split = experiment.load_split(cfg, split_name, ckpt.names, progress=not args.quiet)
    evaluator = experiment.Evaluator(cfg, split, ckpt.model, split_name=split_name)
    metrics, results, detection = evaluator(ckpt.state.params)
    suffix = '' if len(experiment.run_seeds(ckpt.cfg)) == 1 else f'_seed{ckpt.seed}'
    results_path = os.path.join(ckpt.workdir, f'results_{split_name}{suffix}.json')
    metrics_path = os.path.join(ckpt.workdir, f'metrics_{split_name}{suffix}.json')
    write_json_atomic(results_path, results)
    write_json_atomic(metrics_path, {'step': ckpt.step, 'split': split_name, 'seed': ckpt.seed,
                                     **metrics, **evaluation.result_to_json(detection)},
                      indent=1)
    print(f'{split_name} split, checkpoint step {ckpt.step}, seed {ckpt.seed}: accuracy '
          f'{100 * metrics["accuracy"]:.1f}  classification mAP '
          f'{100 * metrics["classification_mAP"]:.1f}')
    print(evaluation.format_table(detection))
    print(f'wrote {results_path} and {metrics_path}')
    return 0


def cmd_map(args, overrides) -> int:
    """Standalone drop-in for the official ActivityNet detection evaluation."""
    from wtal_jax.postprocess import evaluation
    from wtal_jax.io_utils import write_json_atomic
    if overrides:
        raise UserError(f'map takes no config overrides: {" ".join(overrides)}')
    tious = evaluation.parse_tiou_thresholds(args.tiou_thresholds)
    gt = evaluation.load_ground_truth(args.ground_truth, args.subset)
    preds = evaluation.load_predictions(args.predictions, gt)
    if preds.num_outside_subset:
        print(f'warning: {preds.num_outside_subset} predictions are for videos outside subset '
              f'{args.subset!r}; they count as false positives, as in the official evaluation',
              file=sys.stderr)
    result = evaluation.evaluate_detection(gt, preds, tious)
    print(evaluation.format_table(result))
    if args.json:
        write_json_atomic(args.json, evaluation.result_to_json(result), indent=1)
    return 0


def cmd_detect(args, overrides) -> int:
    """Detections for videos without annotations, from their feature files."""
    from wtal_jax.runs import experiment
    detections = experiment.detect(args.checkpoint, args.features, overrides=overrides,
                                   output=args.output, which=args.which, seed=args.seed)
    print(f'wrote {sum(len(v) for v in detections["results"].values())} detections for '
          f'{len(detections["results"])} videos to {args.output}')
    return 0


# Modules that register their own subcommands with ``add_parser(subparsers)``; each subparser
# sets ``func(args, overrides) -> exit status``. Imported lazily so optional extras (torch,
# matplotlib) are imported only by the commands that need them.
_COMMAND_MODULES = ('tools.bench', 'tools.torch_convert', 'tools.plotting', 'tools.ablation')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='wtal-jax', description='Weakly-supervised temporal action localisation by '
                                     'uncertainty modelling (UM, AAAI 2021) in JAX.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('train', help='train (and evaluate) a model; resumes in --workdir')
    _add_config_args(p, required=False)
    p.add_argument('--seeds', help='train several seeds at once (vmap): a list 0,1,2 or a '
                                   'count 5 (= 0..4); default: the config\'s seed')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    g = p.add_argument_group('several processes (jax.distributed; one per host)')
    g.add_argument('--coordinator', help='HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)')
    g.add_argument('--num-processes', type=int, help='N (or JAX_NUM_PROCESSES)')
    g.add_argument('--process-id', type=int, help='this process, 0..N-1 (or JAX_PROCESS_ID)')
    g.add_argument('--distributed-auto', action='store_true',
                   help='detect the processes from SLURM, Open MPI or a TPU pod')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='localise and evaluate a checkpoint on the test split')
    _add_config_args(p, required=False)
    p.add_argument('--checkpoint', help='run directory or RUN/checkpoints/STEP')
    p.add_argument('--which', choices=('best', 'latest'), default='best')
    p.add_argument('--seed', type=int, help='which seed of a run that holds several')
    p.add_argument('--split', help="the test subset (default), 'selection' or the training "
                                   'subset, by name')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('map', help='mAP of an ActivityNet results file (official protocol)')
    p.add_argument('--ground-truth', required=True)
    p.add_argument('--predictions', required=True)
    p.add_argument('--subset', default='test')
    p.add_argument('--tiou-thresholds', default='0.1:0.7:0.1',
                   help='start:stop:step (stop included) or a comma list')
    p.add_argument('--json', help='also write the figures (fractions) to this JSON file')
    p.set_defaults(func=cmd_map)

    p = sub.add_parser('detect', help='detections for feature files of unannotated videos')
    p.add_argument('--checkpoint', required=True, help='run directory or RUN/checkpoints/STEP')
    p.add_argument('--which', choices=('best', 'latest'), default='best')
    p.add_argument('--seed', type=int, help='which seed of a run that holds several')
    p.add_argument('--output', default='detections.json')
    p.add_argument('features', nargs='+',
                   help='per video: one .npy of (n, D), or RGB.npy,FLOW.npy joined by a comma')
    p.set_defaults(func=cmd_detect)

    for name in _COMMAND_MODULES:
        importlib.import_module(f'wtal_jax.{name}').add_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith('--config.')]
    unknown = [a for a in rest if not a.startswith('--config.')]
    if unknown:
        parser.error(f'unrecognised arguments: {" ".join(unknown)}')
    try:
        return args.func(args, overrides)
    except UserError as e:
        print(f'wtal-jax {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'wtal-jax {args.command}: interrupted', file=sys.stderr)
        return 130

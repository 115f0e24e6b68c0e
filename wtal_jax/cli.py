"""The ``wtal-jax`` command (also ``python -m wtal_jax``): every subcommand's parser and its thin
command function, in one place.

Library modules expose functions and raise :class:`~wtal_jax.errors.UserError`; they never parse
arguments or exit. Each command imports what it needs when it runs, so the optional extras
(PyTorch for ``convert-torch`` and ``export-torch``, matplotlib for ``plot``) and JAX are
imported only by the commands that use them.

Every subcommand that takes a config takes ``--config.KEY=VALUE`` overrides. A problem with the
user's input ends in one line on stderr, ``wtal-jax COMMAND: error: MESSAGE``, and exit status 2;
a file the system cannot read or write (a full disk, a permission) ends the same way with exit
status 1; never a traceback for either. Anything else is a bug and keeps its traceback.

One module of ~650 lines on purpose: the whole command surface, every subcommand's options and
their help, reads in one place.
"""

import argparse
import os
import sys

from wtal_jax.errors import UserError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to each option's help, where there is a value to show.

    An option without a value by default (None) says in its own help text what happens then;
    a flag is off by default.
    """

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _subparser(sub, name: str, help_text: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=kwargs.pop('description', help_text),
                          formatter_class=_HelpFormatter, **kwargs)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', help='config file (configs/*.py); any field can be '
                                         'overridden as --config.SECTION.FIELD=VALUE (default: '
                                         'the config saved in --workdir)')
    parser.add_argument('--workdir', help='run directory (default: none)')


def _add_which(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--which', choices=('best', 'latest'), default='best',
                        help="checkpoint of a run directory: the one its checkpoint.select rule "
                             'chose (by default the best on the selection split), or the latest')


def _add_protocol(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--protocol', choices=('seconds', 'snippet'), default='seconds',
                        help='seconds: the official ActivityNet evaluation; snippet: that of '
                             'W-TALC / CO2-Net / DELU: bounds rounded to 16-frame snippets of '
                             '25 fps video, predictions overlapping --ambiguous segments dropped')
    parser.add_argument('--ambiguous', metavar='FILE',
                        help="with --protocol snippet: segments whose overlapping predictions "
                             "are dropped, 'VIDEO START END' (seconds) per line: THUMOS'14's "
                             'Ambiguous_test.txt, shipped with the W-TALC / CO2-Net annotations '
                             '(Thumos14reduced-Annotations) (default: none)')


def _add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--seed', type=int, help='which seed of a run trained with several '
                                                 '(default: its only seed)')


def _add_quiet(parser: argparse.ArgumentParser, what: str = 'no progress bars') -> None:
    parser.add_argument('--quiet', action='store_true', help=what)


def _no_overrides(command: str, overrides) -> None:
    if overrides:
        raise UserError(f'{command} takes no config overrides: {" ".join(overrides)}')


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


# ---------------------------------------------------------------------------------------------
# train, evaluate, map, detect

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
    from wtal_jax.postprocess import tables
    from wtal_jax.runs import evaluate
    source = args.checkpoint or args.workdir
    if not source:
        raise UserError('evaluate needs --workdir or --checkpoint')
    done = evaluate.evaluate_run(source, which=args.which, seed=args.seed, split=args.split,
                                 protocol=args.protocol, ambiguous=args.ambiguous,
                                 config_path=args.config, overrides=overrides,
                                 progress=not args.quiet)
    print(f'{done.split} split, checkpoint step {done.step}, seed {done.seed}')
    print(tables.format_report(done.figures, written=done.metrics_path))
    print(f'wrote {done.results_path} and {done.metrics_path}')
    return 0


def cmd_map(args, overrides) -> int:
    """Standalone drop-in for the official ActivityNet detection evaluation; ``--report`` gives
    every figure papers quote, ``--protocol snippet`` the W-TALC / CO2-Net / DELU protocol."""
    from wtal_jax.io_utils import check_output_path, write_json_atomic
    from wtal_jax.postprocess import report, tables
    _no_overrides('map', overrides)
    if args.json:
        check_output_path(args.json)  # checked before the work, not after it
    figures, result = report.map_files(
        args.ground_truth, args.predictions, subset=args.subset,
        tiou_thresholds=args.tiou_thresholds, full=args.report, family=args.family,
        protocol=args.protocol, ambiguous=args.ambiguous,
        warn=lambda line: print(f'wtal-jax map: warning: {line}', file=sys.stderr))
    print(tables.format_report(figures, written=args.json) if args.report
          else tables.format_table(result))
    if args.json:
        write_json_atomic(args.json, figures, indent=1)
        print(f'wrote {args.json}')
    return 0


def cmd_detect(args, overrides) -> int:
    """Detections for videos without annotations, from their feature files."""
    from wtal_jax.io_utils import check_output_path
    from wtal_jax.runs import detect
    check_output_path(args.output, overwrite=args.force)  # before loading anything
    detections = detect.detect(args.checkpoint, args.features, overrides=overrides,
                                   output=args.output, which=args.which, seed=args.seed,
                                   durations=args.durations)
    found, videos = sum(len(v) for v in detections['results'].values()), len(detections['results'])
    print(f'wrote {found} detection{"" if found == 1 else "s"} for {videos} '
          f'video{"" if videos == 1 else "s"} to {args.output}')
    return 0


def cmd_prepare(args, overrides) -> int:
    """A public release (annotations + features) into the layout ``train`` reads."""
    from wtal_jax.data import prepare
    _no_overrides('prepare', overrides)
    summary = prepare.prepare(args.dataset, annotations=args.annotations, features=args.features,
                              out=args.out, subsets=args.subsets, force=args.force,
                              trust_pickle=args.trust_pickle, progress=not args.quiet)
    print(prepare.format_summary(summary))
    return 0


def _add_core_commands(sub) -> None:
    p = _subparser(sub, 'train', 'train (and evaluate) a model; resumes in --workdir')
    _add_config_args(p)
    p.add_argument('--seeds', help='train several seeds at once (vmap): a list 0,1,2 or a '
                                   "count 5 (= 0..4) (default: the config's seed)")
    _add_quiet(p, 'no progress bar')
    g = p.add_argument_group('several processes (jax.distributed, one per host; see README)')
    g.add_argument('--coordinator', metavar='HOST:PORT',
                   help='address of process 0 (default: JAX_COORDINATOR_ADDRESS, or one process)')
    g.add_argument('--num-processes', type=int,
                   help='N processes in all (default: JAX_NUM_PROCESSES)')
    g.add_argument('--process-id', type=int,
                   help='this process, 0..N-1 (default: JAX_PROCESS_ID)')
    g.add_argument('--distributed-auto', action='store_true',
                   help='detect the processes from SLURM, Open MPI or a TPU pod')
    p.set_defaults(func=cmd_train)

    p = _subparser(sub, 'evaluate', 'localise and evaluate a checkpoint on the test split; '
                                    'writes results_SPLIT.json and metrics_SPLIT.json')
    _add_config_args(p)
    p.add_argument('--checkpoint', help='run directory or RUN/checkpoints/STEP (default: '
                                        '--workdir)')
    _add_which(p)
    _add_seed(p)
    p.add_argument('--split', help="split to evaluate, by name: the test subset, 'selection' (the "
                                   'held-out training videos) or the training subset (default: '
                                   'the test subset, e.g. test or validation)')
    _add_protocol(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_evaluate)

    p = _subparser(sub, 'map', 'mAP of an ActivityNet results file (official protocol, or '
                               '--protocol snippet; --report for every figure)')
    p.add_argument('--ground-truth', required=True,
                   help='annotation file, ActivityNet JSON (e.g. gt.json)')
    p.add_argument('--predictions', required=True,
                   help='detections, ActivityNet results JSON (e.g. results_test.json)')
    p.add_argument('--subset', default='test', help='annotation subset to evaluate')
    p.add_argument('--tiou-thresholds', default='0.1:0.7:0.1',
                   help='start:stop:step (stop included) or a comma list')
    p.add_argument('--json', help='also write the figures (fractions) to this JSON file '
                                  '(default: none)')
    p.add_argument('--report', action='store_true',
                   help="every figure: mAP per tIoU, averages over 0.1:0.5, 0.1:0.7, 0.1:0.9 and "
                        "0.3:0.7 (THUMOS'14) or 0.5:0.95 with 0.5 / 0.75 / 0.95 (ActivityNet) "
                        'whatever --tiou-thresholds says, per-class AP, the evaluated videos; '
                        '--json adds "averages", "mAP_by_tiou", "videos" and more')
    p.add_argument('--family', choices=('auto', 'thumos14', 'activitynet'),
                   help='which averages --report gives (default: auto, which is activitynet when '
                        'every --tiou-thresholds value is >= 0.5, else thumos14)')
    _add_protocol(p)
    p.set_defaults(func=cmd_map)

    p = _subparser(sub, 'detect', 'detections for feature files of unannotated videos')
    p.add_argument('--checkpoint', required=True, help='run directory or RUN/checkpoints/STEP')
    _add_which(p)
    _add_seed(p)
    p.add_argument('--output', default='detections.json',
                   help='ActivityNet results file to write')
    p.add_argument('--force', action='store_true', help='replace --output if it exists')
    p.add_argument('--durations', metavar='FILE',
                   help='video durations, needed by checkpoints that place detections by '
                        'duration (data.use_duration: the ActivityNet configs): a JSON of '
                        'video -> seconds (or -> {"duration": seconds}), or an annotation file '
                        'such as activity_net.v1-3.min.json; a v_ID.npy file takes the bare ID '
                        'where only that has a duration (default: none)')
    p.add_argument('features', nargs='+',
                   help='per video: one .npy of (n, D), or RGB.npy,FLOW.npy joined by a comma')
    p.set_defaults(func=cmd_detect)


def _add_prepare(sub) -> None:
    p = _subparser(sub, 'prepare', 'turn a public release (official annotations + per-video '
                                   'features) into the layout train reads')
    p.add_argument('dataset', choices=('thumos14', 'activitynet'), help='which benchmark')
    p.add_argument('--annotations', nargs='+', required=True,
                   help='the official annotation file (activity_net.v1-3.min.json, gt.json); for '
                        "thumos14 also the per-class CLASS_val.txt/CLASS_test.txt files or their "
                        'folders; for a W-TALC single-file release its -Annotations folder')
    p.add_argument('--features', required=True,
                   help='folder of per-video .npy files (VIDEO.npy or v_VIDEO.npy; joint [rgb, '
                        'flow] or per stream: _rgb/_flow suffix or rgb/flow folders), or the '
                        'W-TALC single file (needs --trust-pickle)')
    p.add_argument('--out', required=True,
                   help='folder to write: gt.json, split_SUBSET.txt, features/SUBSET/{rgb,flow}/ '
                        '(symlinks), missing_features.txt')
    p.add_argument('--subsets', nargs='+',
                   help='annotation subsets to prepare (default: train test for thumos14, whose '
                        'validation videos become train; training validation for activitynet)')
    p.add_argument('--force', action='store_true',
                   help='replace what an earlier prepare wrote into --out')
    p.add_argument('--trust-pickle', action='store_true',
                   help='allow reading a W-TALC single-file release, a pickle that can run code: '
                        'only for a file from a source you trust')
    _add_quiet(p, 'no progress bar')
    p.set_defaults(func=cmd_prepare)


# ---------------------------------------------------------------------------------------------
# bench

def cmd_bench(args, overrides) -> int:
    """Runs the chosen benchmarks and prints each one's figures as soon as it is measured; or
    the whole suite (``--suite``) as one table."""
    import json
    from wtal_jax.tools import bench
    _no_overrides('bench', overrides)
    if (args.which is None) == (args.suite is None):
        raise UserError('give one benchmark (train-step, loop, ...) or --suite accelerator')
    if args.suite:
        return _bench_suite(args)
    shape = bench.Shape(batch_size=args.batch_size, segments=args.segments,
                        feature_dim=args.feature_dim, embed_dim=args.embed_dim,
                        classes=args.classes, config=args.config or '')
    for figures in bench.run(args.which, shape, data=args.data, devices=args.devices,
                             repeats=args.repeats, dtype=args.dtype, steps=args.steps,
                             train_videos=args.train_videos, test_videos=args.test_videos,
                             log_every=args.log_every, eval_every=args.eval_every,
                             num_seeds=args.num_seeds):
        if args.json:
            print(json.dumps(figures), flush=True)
            continue
        print(figures['benchmark'] + ':')
        for key, value in figures.items():
            if key != 'benchmark':
                print(f'  {key:26s} {value:.4g}' if isinstance(value, float)
                      else f'  {key:26s} {value}')
        sys.stdout.flush()
    return 0


def _bench_suite(args) -> int:
    import json
    from wtal_jax.tools import bench_suite
    done = bench_suite.run(args.suite, scale='quick' if args.quick else args.scale,
                           protocol_steps=args.protocol_steps, num_seeds=args.num_seeds,
                           data=args.data)
    if args.json:
        print(json.dumps(done.to_json(args.suite)))
    else:
        print(done.header)
        print(bench_suite.format_table(done.results))
        print(f'suite: {done.seconds:.0f} s in all')
    return 0


def _add_bench(sub) -> None:
    from wtal_jax.tools import bench, bench_suite  # NumPy only; defaults: THUMOS'14's sizes
    sizes = bench.Shape()
    p = _subparser(sub, 'bench', 'benchmarks (train-step, loop, seeds, inference, localize, map)',
                   description='Speed of the training step, the training loop, many seeds at '
                               "once, inference, localisation and mAP, at THUMOS'14's sizes by "
                               'default; every figure beside one measured in the same run (the '
                               "machine's matmul rate, the compiled step alone, one seed). "
                               'wtal-jax bench --suite accelerator runs them all as one table.')
    p.add_argument('which', nargs='?', choices=bench.BENCHMARKS,
                   help='what to time: train-step; loop (the real training loop against the '
                        'compiled step alone); seeds (N seeds at once against N runs of one); '
                        'inference, localize or map over the test videos (localize and map are '
                        'timed together); all. Or --suite instead')
    g = p.add_argument_group('the suite: every benchmark in one prepared run, one table')
    g.add_argument('--suite', choices=bench_suite.SUITES,
                   help='run the suite instead of one benchmark (its sizes: --scale) (default: one '
                        'benchmark)')
    g.add_argument('--scale', choices=('auto', *bench_suite.SCALES), default='auto',
                   help="sizes of the suite: thumos (THUMOS'14's: B=16, T=750, D=E=2048, C=20, "
                        '10,000 protocol steps), quick (B=4, T=32, D=E=32, 40 protocol steps), '
                        'or auto: quick on a CPU, thumos on an accelerator')
    g.add_argument('--quick', action='store_true', help='the same as --scale quick')
    g.add_argument('--protocol-steps', type=int,
                   help='steps of the suite\'s protocol run (default: 10,000 at thumos, 40 at '
                        'quick)')
    p.add_argument('--batch-size', type=int, default=sizes.batch_size,
                   help='B, videos per training step')
    p.add_argument('--segments', type=int, default=sizes.segments,
                   help='T, segments a video is sampled to')
    p.add_argument('--feature-dim', type=int, default=sizes.feature_dim, help='D, feature size')
    p.add_argument('--embed-dim', type=int, default=sizes.embed_dim, help='E, embedding size')
    p.add_argument('--classes', type=int, default=sizes.classes, help='C, number of classes')
    p.add_argument('--config', help="a config file whose method and model settings to time, "
                                    'e.g. configs/basnet_thumos14.py; the sizes above replace '
                                    "its own (default: UM's defaults)")
    p.add_argument('--dtype', choices=bench.DTYPES, default='float32',
                   help='model.dtype of train-step, loop and seeds: features and matmuls')
    p.add_argument('--repeats', type=int, default=3,
                   help='timed repetitions (after a warm-up): steps of train-step, runs of '
                        'inference, localize and map')
    p.add_argument('--devices', type=int, default=1,
                   help='local devices of the mesh for train-step, loop and seeds')
    p.add_argument('--steps', type=int,
                   help=f'training steps of loop (default: {bench.LOOP_STEPS}) and of each run '
                        f'of seeds (default: {bench.SEED_STEPS})')
    p.add_argument('--log-every', type=int, default=10,
                   help='loop: train.log_every_steps, the interval of metric fetches and of the '
                        "loop's own rate; the first window (compilation) is not timed")
    p.add_argument('--eval-every', type=int, default=0,
                   help='loop: evaluate the test videos every N steps; 0: only after the last '
                        'step, which the loop always does and the rate leaves out')
    p.add_argument('--train-videos', type=int, default=bench.LOOP_TRAIN_VIDEOS,
                   help="loop: training videos of 200-2,000 segments (the default holds about "
                        "THUMOS'14's 65,215 training segments, 0.53 GB at D=2048)")
    p.add_argument('--test-videos', type=int, default=bench.GENERATED_VIDEOS,
                   help="loop: test videos of THUMOS'14-like lengths")
    p.add_argument('--num-seeds', type=int, default=5,
                   help='seeds (and the suite): N, the seeds trained at once and the runs of one')
    p.add_argument('--data', help="folder with THUMOS'14's durations.json, gt.json and "
                                  'split_test.txt: time inference, localize and map on its '
                                  f'test videos (default: {bench.GENERATED_VIDEOS} generated '
                                  "videos of THUMOS'14-like lengths with synthetic ground "
                                  'truth)')
    p.add_argument('--json', action='store_true', help='print each benchmark as one JSON object')
    p.set_defaults(func=cmd_bench)


# ---------------------------------------------------------------------------------------------
# convert-torch, export-torch

def cmd_convert_torch(args, overrides) -> int:
    from wtal_jax import config as config_lib
    from wtal_jax.tools import torch_convert
    cfg = config_lib.load_config(args.config, overrides)
    folder, names = torch_convert.convert(args.model, cfg, args.workdir, force=args.force)
    print(f'converted {args.model} (D={cfg.data.feature_dim}, E={cfg.model.embed_dim}, '
          f'C={len(names)}) to {folder}')
    root = '' if cfg.data.root else ' --config.data.root=DATA_ROOT'
    print(f'evaluate it: wtal-jax evaluate --workdir {args.workdir}{root}; fine-tune it: '
          f'wtal-jax train ... --config.train.init_from={args.workdir}')
    return 0


def cmd_export_torch(args, overrides) -> int:
    from wtal_jax.tools import torch_convert
    _no_overrides('export-torch', overrides)
    source = args.checkpoint or args.workdir
    step, workdir, names = torch_convert.export(source, args.output, which=args.which,
                                                seed=args.seed, force=args.force)
    print(f'wrote {args.output}: step {step} of {workdir}, {len(names)} classes in this '
          f'order: {", ".join(names)}')
    return 0


def _add_torch_commands(sub) -> None:
    p = _subparser(
        sub, 'convert-torch', "a PyTorch state_dict of the authors' release -> a run directory",
        description='Converts a state_dict saved by the authors\' PyTorch release of the '
                    "config's method (UM's, BaS-Net's; docs/pytorch-model.md lists their "
                    'keys; a dict wrapping it under '
                    '"state_dict" or "model", and DataParallel\'s "module." prefix, are accepted '
                    'too) into WORKDIR/config.json and an orbax checkpoint at step 0, for '
                    'evaluate, detect and train --config.train.init_from=WORKDIR. The file is '
                    'read with torch.load(weights_only=True). Needs the [torch] extra.')
    p.add_argument('model', help='the .pkl/.pt file written by torch.save')
    p.add_argument('--config', required=True,
                   help='config file (configs/thumos14.py); its data.feature_dim, '
                        'model.embed_dim and class list must fit the file')
    p.add_argument('--workdir', required=True, help='run directory to create')
    p.add_argument('--force', action='store_true',
                   help='replace the checkpoints (and metrics.jsonl) already in --workdir')
    p.set_defaults(func=cmd_convert_torch)

    p = _subparser(
        sub, 'export-torch', "a run's parameters -> a PyTorch state_dict of the release layout",
        description='Writes the parameters of a run\'s checkpoint as the release\'s state_dict '
                    '(an OrderedDict of float32 tensors, torch.save), loadable with '
                    'load_state_dict(strict=True). Needs the [torch] extra.')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--workdir', help='run directory (see --which)')
    source.add_argument('--checkpoint', help='RUN/checkpoints/STEP, or a run directory')
    _add_which(p)
    _add_seed(p)
    p.add_argument('--force', action='store_true', help='replace the output file if it exists')
    p.add_argument('output', help='file to write (e.g. model.pkl)')
    p.set_defaults(func=cmd_export_torch)


# ---------------------------------------------------------------------------------------------
# plot

def cmd_plot(args, overrides) -> int:
    from wtal_jax.tools import plotting
    plotting.require_matplotlib()  # fail before any loading when matplotlib is missing
    paths = args.compare or [args.workdir]
    if args.compare is not None and len(paths) < 2:
        raise UserError(f'--compare needs at least two runs, got {len(paths)}')
    runs = [plotting.load_run(path, which=args.which, seed=args.seed, overrides=overrides,
                              progress=not args.quiet) for path in paths]
    out = args.out or os.path.join(runs[0].workdir, 'plots')
    if args.compare is not None:
        written = [plotting.write_compare(runs, out, video=args.video,
                                          class_name=args.class_name)]
    else:
        written = plotting.write_figures(runs[0], out, video=args.video,
                                         class_name=args.class_name)
    for path in written:
        print(f'wrote {path}')
    return 0


def _add_plot(sub) -> None:
    p = _subparser(sub, 'plot', 'figures of a run (magnitudes, a video timeline, curves), or '
                                'the comparison of runs on one video (paper Fig. 4)',
                   description='Writes PNG figures of a run: action vs background feature '
                               'magnitudes before and after training (paper Fig. 2; methods '
                               "whose outputs hold magnitudes), one video's scores, detections "
                               'and ground truth, and the training curves, each file named by '
                               'seed. With --compare, one PNG of several runs (e.g. BaS-Net '
                               "and UM): each run's scores and detections above the ground "
                               'truth on one time axis (paper Fig. 4). Needs the [viz] extra.')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--workdir', help='run directory or RUN/checkpoints/STEP')
    source.add_argument('--compare', nargs='+', metavar='RUN',
                        help='two or more run directories (or RUN/checkpoints/STEP) of one '
                             'split and class list, --seed and --which applying to each: '
                             'writes compare_VIDEO_CLASS_seedS.png')
    p.add_argument('--video', help='test video of the timeline (default: the first with ground '
                                   'truth)')
    p.add_argument('--class', dest='class_name',
                   help="class of the timeline (default: the video's first ground-truth class)")
    _add_which(p)
    _add_seed(p)
    p.add_argument('--out', help='folder for the PNG files (default: RUN/plots, of the first '
                                 'run with --compare)')
    _add_quiet(p)
    p.set_defaults(func=cmd_plot)


# ---------------------------------------------------------------------------------------------
# ablate

def cmd_ablate(args, overrides) -> int:
    from wtal_jax.tools import ablation
    ablation.run_study(args.study, config_path=args.config, overrides=overrides,
                       seeds=args.seeds, workdir=args.workdir, settings=args.settings,
                       progress=not args.quiet, log=lambda text: print(text, flush=True))
    return 0


def _add_ablate(sub) -> None:
    from wtal_jax.tools import ablation  # NumPy only: JAX is imported when training
    p = _subparser(sub, 'ablate', "the paper's ablations: table3 (losses, scores), table5 "
                                  '(margin m); resumable')
    p.add_argument('--study', required=True, choices=tuple(ablation.STUDIES),
                   help='table3: losses and scores; table5: the maximum feature magnitude m')
    p.add_argument('--seeds', type=int, default=3,
                   help='seeds per setting, trained at once (0, 1, ... added to the config seed)')
    p.add_argument('--workdir', default='runs/ablate',
                   help='folder of the runs (WORKDIR/STUDY/SETTING) and tables')
    p.add_argument('--config', default='configs/synthetic.py',
                   help='base config file; fields overridable as --config.SECTION.FIELD=VALUE')
    p.add_argument('--settings', help='comma-separated subset, e.g. a,d or m50,m100 (default: '
                                      'every setting of the study)')
    _add_quiet(p)
    p.set_defaults(func=cmd_ablate)


# ---------------------------------------------------------------------------------------------
# sweep

def cmd_sweep(args, overrides) -> int:
    from wtal_jax.tools import sweep
    seeds = parse_seeds(args.seeds) if ',' in args.seeds else _seed_count(args.seeds)
    sweep.sweep(args.set or [], config_path=args.config, overrides=overrides, seeds=seeds,
                workdir=args.workdir, progress=not args.quiet,
                log=lambda text: print(text, flush=True))
    return 0


def _seed_count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f'--seeds {text}: expected a count (3) or a list (0,1,2)') from None


def _add_sweep(sub) -> None:
    p = _subparser(sub, 'sweep', 'train a grid of config values, one run per point, its seeds '
                                 'at once; one table; each point compared with the default',
                   description='Trains one run directory per point of the grid (WORKDIR/KEY=VALUE'
                               ', the cross product of every --set), each training its seeds at '
                               "once, and the point with the config's own values when the grid "
                               'lacks it; finished points are not trained again, interrupted '
                               'ones resume. Writes WORKDIR/sweep.md, sweep.json and sweep.png: '
                               'per point the selected, last-step and best-on-test average mAP '
                               '(mean ± sd over seeds), and each point against the default '
                               '(wtal-jax compare).')
    p.add_argument('--set', action='append', metavar='KEY=V1,V2',
                   help='a field and its values, parsed as --config.KEY=VALUE parses them, e.g. '
                        "loss.margin=10,25,50; a list-valued field separates its values by ';' "
                        "('eval.tiou_thresholds=0.1:0.5:0.1;0.3,0.5,0.7'); repeat for a grid "
                        '(default: none, which is refused)')
    p.add_argument('--seeds', default='3',
                   help="seeds of every point, trained at once: a count N (the config's seed "
                        'and the N - 1 after it) or a list 0,1,2')
    p.add_argument('--config', required=True,
                   help='base config file; fields overridable as --config.SECTION.FIELD=VALUE')
    p.add_argument('--workdir', required=True,
                   help='folder of the runs (WORKDIR/POINT) and of the tables')
    _add_quiet(p)
    p.set_defaults(func=cmd_sweep)


# ---------------------------------------------------------------------------------------------
# compare

def cmd_compare(args, overrides) -> int:
    from wtal_jax.io_utils import check_output_path, write_json_atomic
    from wtal_jax.tools import compare
    _no_overrides('compare', overrides)
    if args.json:
        check_output_path(args.json)   # before reading anything: a typo fails at once
    comparisons, warnings = compare.compare_runs(args.runs)
    for text in warnings:
        print(f'warning: {text}', file=sys.stderr)
    print(compare.format_comparisons(comparisons))
    if args.json:
        write_json_atomic(args.json, compare.to_json(comparisons), indent=1)
        print(f'wrote {args.json}')
    return 0


def _add_compare(sub) -> None:
    p = _subparser(sub, 'compare', 'is run B better than run A beyond seed noise? (paired seeds)',
                   description='Pairs the seeds of runs trained with the same seed numbers and '
                               'gives, for the selected, last-step and best-on-test columns of '
                               'their report.json and each protocol average, the mean per-seed '
                               'difference B - A in mAP points, its 95% confidence interval '
                               "(Student's t) and an exact paired sign-flip p-value, then a "
                               'verdict in words. Each later run is compared against the first. '
                               'Runs must share their test split, tIoU thresholds, protocol and '
                               'classes.')
    p.add_argument('runs', nargs='+', metavar='RUN',
                   help='run directories with a report.json: RUN_A RUN_B [RUN_C ...]')
    p.add_argument('--json', metavar='FILE',
                   help='also write every comparison (per-seed values, differences, mean, '
                        'ci95, p_value; fractions) to this JSON file (default: none, the text '
                        'alone)')
    p.set_defaults(func=cmd_compare)


# ---------------------------------------------------------------------------------------------
# show

def cmd_show(args, overrides) -> int:
    import json
    from wtal_jax.tools import show
    _no_overrides('show', overrides)
    shown = show.describe(args.run)
    print(json.dumps(shown, indent=1) if args.json else show.format_run(shown))
    return 0


def _add_show(sub) -> None:
    p = _subparser(sub, 'show', 'what a run directory holds: config, data, seeds, steps, '
                                'checkpoints, the selected one and why, the report',
                   description='Shows a run directory without changing it: its config (the '
                               "fields that differ from its method's defaults first), the "
                               'fingerprint of its training data, its seeds, the steps done, the '
                               'checkpoints kept and the one each seed\'s checkpoint.select rule '
                               'chooses, and its report\'s table; a run without a report or '
                               'without checkpoints is shown as far as it goes.')
    p.add_argument('run', metavar='RUN', help='run directory (a train or convert-torch --workdir)')
    p.add_argument('--json', action='store_true',
                   help='print it all as one JSON object instead (the full config, the report)')
    p.set_defaults(func=cmd_show)


# ---------------------------------------------------------------------------------------------
# The parser and the entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='wtal-jax', description='Weakly-supervised temporal action localisation by '
                                     'uncertainty modelling (UM, AAAI 2021) in JAX.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    _add_core_commands(sub)
    _add_bench(sub)
    _add_torch_commands(sub)
    _add_plot(sub)
    _add_ablate(sub)
    _add_prepare(sub)
    _add_compare(sub)
    _add_sweep(sub)
    _add_show(sub)
    return parser


def _describe_os_error(error: OSError) -> str:
    """``FILE: reason`` for an OSError (``FILE -> OTHER`` when it names two files)."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where += f' -> {os.fsdecode(error.filename2)}'
    return f'{where}: {reason}'


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
    except OSError as e:  # the system refused a file: a full disk, a permission, a lost mount
        print(f'wtal-jax {args.command}: error: {_describe_os_error(e)}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'wtal-jax {args.command}: interrupted', file=sys.stderr)
        return 130

"""``recokd benchmark``: teacher vs ReCo-KD, plain and logit-KD students, measured in one run.

``recokd benchmark --dataset hippocampus --schedule cpu`` runs the protocol of
:mod:`recokd.evaluate.protocol` and writes ``<name>.json``, ``<name>.md`` and the PNG plots;
``recokd benchmark --update-readme`` only regenerates the README's results table from a
results JSON, ``--render`` the report and plots beside it; ``--kd-weight-sweep 0.1 1`` adds
ReCo-KD students at other KD weights to a finished run, ``--width-sweep 1/8 1/2`` ReCo-KD and
plain students at other widths, ``--init-study`` plain students started in other ways from
the teacher (:mod:`recokd.evaluate.student_sweep`).
"""

from __future__ import annotations

from pathlib import Path

from recokd.commands.distillation_options import add_distillation_arguments, options_from
from recokd.device import DEVICE_CHOICES
from recokd.workspace import DEFAULT_WORK_DIR

DEFAULT_SOURCE = Path("../shared/data/Dataset004_Hippocampus")
DEFAULT_RESULTS = Path("ReCoKDTraining/benchmarks/results/hippocampus.json")


def register(subparsers) -> None:
    from recokd.evaluate.protocol import DATASETS, PRESETS

    p = subparsers.add_parser(
        "benchmark", help="compare teacher and students (Dice, HD95, size, speed, memory) in one run",
        description="Trains an nnU-Net teacher and four student arms of the same width (ReCo-KD, logit KD and no "
                    "KD started from the teacher; no KD from random init), each with --seeds seeds, on a fixed "
                    "seeded train split; evaluates all on the held-out test split with paired per-case "
                    "statistics, times teacher and student on a CT-sized volume and times the KD step; writes "
                    "JSON, Markdown and PNG results. "
                    "Schedules: " + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()))
    p.add_argument("--dataset", choices=list(DATASETS), default="hippocampus")
    p.add_argument("--schedule", choices=list(PRESETS), default="cpu", help="named size of the run (default cpu)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                   help=f"Hippocampus in nnU-Net raw format, only read (default {DEFAULT_SOURCE})")
    p.add_argument("--work-dir", type=Path, default=None,
                   help=f"nnU-Net folders, models and packages (default {DEFAULT_WORK_DIR}/benchmark_<dataset>_<schedule>)")
    p.add_argument("--output-dir", type=Path, default=None, help="where the results go (default <work-dir>/results)")
    p.add_argument("--width", default="1/4", help="student width; narrower if above 1/10 of the teacher's parameters")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of every training")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of the cases held out for testing")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="training device")
    p.add_argument("--seeds", type=int, default=1,
                   help="training seeds per student arm (seed, seed+1, ...); 3 or more for paired statistics that "
                        "mean something. A rerun with more seeds reuses the trainings done")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads for the whole run: training, evaluation, timing (default: PyTorch's choice)")
    p.add_argument("--no-mirroring", action="store_true", help="evaluate without test-time mirroring")
    add_distillation_arguments(p, per_arm=False)
    sweep = p.add_argument_group("after a finished benchmark run (its --work-dir)").add_mutually_exclusive_group()
    sweep.add_argument("--kd-weight-sweep", type=float, nargs="+", metavar="LAMBDA", default=None,
                       help="train one more ReCo-KD student per KD weight beside the benchmark's (same teacher, "
                            "data, schedule, seed) and score all of them on its test cases; writes "
                            "<dataset>_kd_weight_sweep.{json,md,png}")
    sweep.add_argument("--width-sweep", nargs="+", metavar="WIDTH", default=None,
                       help="train a ReCo-KD and a plain student per width (1, 1/2, 1/4, 1/8) beside the "
                            "benchmark's, score all on its test cases and time each width on its CT-sized volume; "
                            "writes <dataset>_width_sweep.{json,md,png}")
    sweep.add_argument("--init-study", nargs="*", metavar="START", default=None,
                       help="train a plain student per way of starting it from the teacher (default: every one of "
                            "gamma, activation, gamma-refit, activation-refit-lr0.001) beside the benchmark's "
                            "random-init and inherited plain students, probe each before its first step, score all; "
                            "writes <dataset>_init_sweep.{json,md,png}")
    readme = p.add_argument_group("from an existing results JSON (no benchmark run)")
    readme.add_argument("--update-readme", action="store_true",
                        help="regenerate the README's results table from --results and exit")
    readme.add_argument("--render", action="store_true",
                        help="regenerate the Markdown report and plots beside --results (e.g. after adding notes "
                             "with the analysis of a missed target to its 'notes') and exit")
    readme.add_argument("--ship-students", type=Path, metavar="DIR", default=None,
                        help="export the ReCo-KD and no-KD students (first seed) of the benchmark in --work-dir whose "
                             "results are --results into DIR, with model cards holding their data, licence, "
                             "citation and measured accuracy, and exit")
    readme.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help=f"results JSON (default {DEFAULT_RESULTS})")
    readme.add_argument("--readme", type=Path, default=Path("README.md"), help="README to update (default README.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from recokd.evaluate.report import update_readme

    if args.ship_students is not None:
        from recokd.evaluate.shipping import ship_students

        for path in ship_students(args.results, _work_dir(args), args.ship_students):
            print(f"Shipped {path} ({path.stat().st_size:,} bytes)")
        return 0
    if args.render:
        paths = _render(args.results)
        print(f"Rendered {paths['markdown']} and its plots from {args.results}")
        if not args.update_readme:
            return 0
    if args.kd_weight_sweep or args.width_sweep or args.init_study is not None:
        return _run_sweep(args)
    if args.update_readme:
        changed = update_readme(args.readme, args.results)
        print(f"{args.readme}: results table {'updated' if changed else 'already up to date'} from {args.results}")
        return 0
    return _run_benchmark(args)


def _render(results_path: Path) -> dict[str, Path]:
    """The report and plots beside ``results_path``: a sweep's (its JSON has a ``kind``) or a benchmark's."""
    from recokd.evaluate.report import read_results, write_report
    from recokd.evaluate.sweep_report import write_sweep_report

    results, name = read_results(results_path), results_path.name.removesuffix(".json")
    write = write_sweep_report if "kind" in results else write_report
    return write(results, results_path.parent, name)


def _work_dir(args) -> Path:
    return args.work_dir or DEFAULT_WORK_DIR / f"benchmark_{args.dataset}_{args.schedule}"


def _run_sweep(args) -> int:
    from recokd.evaluate.student_sweep import run_sweep
    from recokd.evaluate.sweep_report import write_sweep_report

    work_dir = _work_dir(args)
    kind, values = (("kd_weight", args.kd_weight_sweep) if args.kd_weight_sweep else
                    ("width", args.width_sweep) if args.width_sweep else ("init", args.init_study))
    results = run_sweep(work_dir, kind, values, args.device, args.threads, not args.no_mirroring)
    paths = write_sweep_report(results, args.output_dir or work_dir / "results", results["benchmark"])
    print(f"Results: {paths['json']}\nReport:  {paths['markdown']}")
    return 0


def _run_benchmark(args) -> int:
    from recokd.evaluate.protocol import PRESETS, BenchmarkConfig, run_benchmark
    from recokd.evaluate.report import target_checks, write_report
    from recokd.nnunet.student_plans import parse_width

    work_dir = _work_dir(args)
    config = BenchmarkConfig(
        dataset=args.dataset, preset=PRESETS[args.schedule], work_dir=work_dir,
        source=args.source if args.dataset == "hippocampus" else None, width=parse_width(args.width),
        seed=args.seed, test_fraction=args.test_fraction, device=args.device,
        kd_options=options_from(args), mirroring=not args.no_mirroring, threads=args.threads, seeds=args.seeds)
    results = run_benchmark(config)
    paths = write_report(results, args.output_dir or work_dir / "results", args.dataset)
    for check in target_checks(results):
        print(f"{check.status:>12}  {check.target}: {check.measured}")
    print(f"Results: {paths['json']}\nReport:  {paths['markdown']}")
    return 0

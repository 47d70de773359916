"""``recokd segment``: label volumes with a model package (one file, a DICOM series, or a folder batch).

Exit status: 0 done; 2 a problem with the input, model or output (one line on stderr, and a
JSON error event with ``--progress json``); 130 / 143 stopped by SIGINT / SIGTERM. A stop
takes effect between forward passes; outputs are written atomically, so an interrupted run leaves
only complete files (those of cases finished before the stop) and no temporary ones.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from pathlib import Path

from recokd.device import DEVICE_CHOICES
from recokd.errors import CancelledError, no_space_error
from recokd.inference.backends import BACKEND_CHOICES
from recokd.inference.image_io import OUTPUT_SUFFIXES
from recokd.inference.label_map import RESAMPLING_CHOICES
from recokd.inference.progress import (
    BarReporter,
    CancelToken,
    JsonLinesReporter,
    Reporter,
    SilentReporter,
    StageProgress,
    rescaled,
)

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment volumes with a model package",
        description="Segment an image file, a DICOM series folder, or every image in a folder (a batch).",
        epilog="Exit status: 0 done; 2 bad input, model or output; 130/143 stopped by SIGINT/SIGTERM "
        "(no partial file is left).",
    )
    p.add_argument("-m", "--model", required=True, help="model package file (*.recokd.zip) or installed model name")
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="image file (NIfTI, NRRD, MHA), DICOM series folder, or folder of image files")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="label file (.nii.gz, .seg.nrrd, .nrrd, .nii or .mha) or output folder (one file per input)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA when available (default)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="runtime of the network on the CPU: auto picks the fastest installed (OpenVINO, then ONNX "
                   "Runtime, then PyTorch), and PyTorch on a GPU (default auto)")
    p.add_argument("--resampling", choices=RESAMPLING_CHOICES, default="torch",
                   help="resampling of the logits back to the input grid: torch (nnU-Net's linear resampling as "
                   "PyTorch ops, fast; equal up to float32 ties) or nnunet (nnU-Net's scipy arithmetic, bit for bit)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's choice)")
    p.add_argument("--fast", action="store_true", help="no test-time mirroring: up to 8x faster, slightly less accurate")
    p.add_argument("--step", type=float, default=0.5, help="sliding-window step as a fraction of the patch (default 0.5)")
    p.add_argument("--format", choices=list(OUTPUT_SUFFIXES), default=None,
                   help="output format when -o is a folder (default nii.gz)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="bar: tqdm on stderr; json: one JSON object per line on stdout (for GUIs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--continue", dest="continue_existing", action="store_true",
                   help="skip inputs whose output file exists (outputs are written atomically: an existing one is whole)")
    p.add_argument("--part", type=int, default=0, metavar="K",
                   help="with --num-parts N: segment part K (0..N-1) of the sorted inputs, every N-th from the K-th")
    p.add_argument("--num-parts", type=int, default=1, metavar="N",
                   help="split a folder batch into N parts (e.g. a SLURM job array of N tasks; default 1)")
    p.add_argument("--series", metavar="UID", help="DICOM series to segment when the folder holds several")
    p.add_argument("--models-dir", type=Path, help="installed models folder (default: $RECOKD_MODELS_DIR or per-user)")
    p.set_defaults(func=run)


def _reporter(kind: str) -> Reporter:
    if kind == "json":
        return JsonLinesReporter(sys.stdout)
    return BarReporter() if kind == "bar" else SilentReporter()


@contextmanager
def _stop_on_signals(token: CancelToken) -> Iterator[dict]:
    """SIGINT and SIGTERM set ``token`` (the run stops at the next tile); a second signal stops at once.

    Yields a dict that receives ``"signal"``, the number of the first signal.
    """
    received: dict = {}

    def handle(signum, frame) -> None:
        name = signal.Signals(signum).name
        if token.cancelled:
            raise CancelledError(f"stopped by a second {name}")
        received["signal"] = signum
        token.cancel(f"stopped by {name}")

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args) -> int:
    reporter = _reporter(args.progress)  # JSON lines keep the real stdout ...
    token = CancelToken()
    done: list[dict] = []
    quiet_stdout = redirect_stdout(sys.stderr) if args.progress == "json" else nullcontext()
    with quiet_stdout, _stop_on_signals(token) as received:  # ... and nnU-Net's prints go to stderr
        try:
            labels, summary = _segment(args, reporter, token, done)
        except CancelledError as error:
            message = f"{error}: {len(done)} output(s) completed before the stop, no partial file written"
            reporter.error(message)
            print(f"recokd segment: {message}", file=sys.stderr)
            return 128 + received.get("signal", signal.SIGINT)
        except Exception as error:
            if args.progress != "json":  # the command line prints the message, and the JSON error event
                reporter.error(str(error))
            user_error = no_space_error(error)
            if user_error is not None:
                raise user_error from error
            raise
    reporter.result(done, labels)
    if args.progress != "json":
        print(summary)
    return 0


def _segment(args, reporter: Reporter, token: CancelToken, done: list[dict]) -> tuple[list[dict], str]:
    """Run every job, appending one ``{"input", "output", "seconds", "rss_bytes"}`` per finished case to ``done``.

    ``rss_bytes`` is the process's resident memory right after the case (None where the OS
    does not say): over a batch it shows whether memory stays flat.

    Returns the model's labels as dicts and a human-readable summary.
    """
    from recokd.inference.image_io import read_image, write_labels
    from recokd.inference.jobs import plan_jobs
    from recokd.inference.memory import current_rss_bytes, peak_rss_bytes
    from recokd.inference.predictor import StudentPredictor
    from recokd.package.archive import load_package
    from recokd.package.registry import resolve_model

    jobs = plan_jobs(args.input, args.output, args.format, args.overwrite, args.series,
                     part=args.part, num_parts=args.num_parts, continue_existing=args.continue_existing)
    count = len(jobs)
    if not count:
        return [], f"Nothing to segment: part {args.part} of {args.num_parts} has no inputs left to do."
    report = StageProgress(rescaled(reporter, 0.0, 1.0 / count))
    report("loading", 0.0, f"loading model {args.model}")
    package = load_package(resolve_model(args.model, args.models_dir))
    predictor = StudentPredictor(package, args.device, mirroring=not args.fast, tile_step=args.step, threads=args.threads,
                                 backend=args.backend, resampling=args.resampling)
    lines = [f"Segmented {count} volume(s) with {package.name} on {predictor.device} ({predictor.backend}):"]
    for index, job in enumerate(jobs):
        token.raise_if_cancelled()
        callback = rescaled(reporter, index / count, (index + 1) / count)
        if index:
            report = StageProgress(callback)
        started = time.perf_counter()
        report("loading", 0.5, f"reading {job.input}")
        image = read_image(job.input, args.series)
        labels = predictor.predict_image(image, callback, token)
        del image
        token.raise_if_cancelled()
        report("writing", 0.0, f"writing {job.output}")
        write_labels(labels, job.output, package.labels, overwrite=args.overwrite)
        seconds = time.perf_counter() - started
        report("writing", 1.0, f"wrote {job.output}")
        done.append({"input": str(job.input), "output": str(job.output), "seconds": round(seconds, 3),
                     "rss_bytes": current_rss_bytes()})
        peak = peak_rss_bytes()
        peak_text = f"{peak / 1024**2:.0f} MB" if peak else "n/a"
        lines.append(f"  {job.input.name} -> {job.output}  {seconds:.1f} s  peak RSS so far {peak_text}")
    return [label.to_dict() for label in package.labels], "\n".join(lines)

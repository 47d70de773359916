"""``recokd export``: write a model package from an nnU-Net / ReCo-KD training result."""

from __future__ import annotations

import json
from pathlib import Path

from recokd.errors import RecokdError


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a model package (.recokd.zip) from a training result")
    p.add_argument("--result", type=Path, required=True,
                   help="nnU-Net result folder, .../<Trainer>__<plans>__<configuration>")
    p.add_argument("--fold", default="0", help="fold to export: a number or 'all' (default 0)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file in fold_<f>")
    p.add_argument("-o", "--output", type=Path, required=True, help="package file to write, NAME.recokd.zip")
    p.add_argument("--name", help="model name shown to users (default: dataset, width and configuration)")
    p.add_argument("--metrics", type=Path, help="JSON file with measured metrics to record in the model card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args) -> int:
    from recokd.package.archive import read_package_info
    from recokd.package.export import export_package

    fold = int(args.fold) if str(args.fold).isdigit() else args.fold
    out = export_package(args.result, args.output, fold=fold, checkpoint=args.checkpoint, name=args.name,
                         metrics=_read_metrics(args.metrics), overwrite=args.overwrite)
    card = read_package_info(out).card
    print(f"Wrote {out}: {card['name']}, {card['parameters']:,} parameters, "
          f"{card['flops_per_patch'] / 1e9:.2f} GFLOPs per patch")
    return 0


def _read_metrics(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RecokdError(f"--metrics {path} cannot be read as JSON ({error}).") from error
    if not isinstance(metrics, dict):
        raise RecokdError(f"--metrics {path} must hold a JSON object.")
    return metrics

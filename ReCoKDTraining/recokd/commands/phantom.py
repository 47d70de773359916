"""``recokd phantom``: write the synthetic CT phantom as an nnU-Net v2 raw dataset."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from recokd.data.phantom import DEFAULT_CLASSES, PhantomConfig, write_dataset


def register(subparsers) -> None:
    p = subparsers.add_parser("phantom", help="generate the synthetic CT phantom dataset")
    p.add_argument("--out", type=Path, required=True, help="dataset folder, e.g. .../Dataset990_Phantom")
    p.add_argument("--cases", type=int, default=20, help="training cases (default 20)")
    p.add_argument("--test-cases", type=int, default=0, help="held-out cases in imagesTs/labelsTs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, default=(64, 64, 64), metavar=("Z", "Y", "X"))
    p.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES), choices=list(DEFAULT_CLASSES))
    p.set_defaults(func=run)


def run(args) -> int:
    config = PhantomConfig(shape=tuple(args.size), classes=tuple(args.classes))
    with tqdm(total=args.cases + args.test_cases, desc="phantom", unit="case") as bar:
        write_dataset(args.out, args.cases, args.test_cases, args.seed, config,
                      progress=lambda done, total: bar.update(1))
    print(f"Wrote {args.cases} training + {args.test_cases} test cases to {args.out}")
    return 0

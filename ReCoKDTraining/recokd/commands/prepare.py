"""``recokd prepare``: nnU-Net's fingerprint, planning and preprocessing of a raw dataset."""

from __future__ import annotations

from pathlib import Path

from recokd.nnunet.prepare import prepare_dataset
from recokd.workspace import DEFAULT_WORK_DIR, Workspace


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="plan and preprocess a dataset with nnU-Net (once per dataset)")
    p.add_argument("--dataset", required=True, help="dataset id or folder name under nnUNet_raw")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--processes", type=int, default=2, help="worker processes for preprocessing")
    p.add_argument("--no-verify", action="store_true", help="skip nnU-Net's dataset integrity check")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    p.set_defaults(func=run)


def run(args) -> int:
    folder = prepare_dataset(Workspace.under(args.work_dir), args.dataset, args.configuration, args.processes,
                             verify=not args.no_verify)
    print(f"Preprocessed data in {folder}")
    return 0

"""``recokd models list|add|remove``: manage the installed models folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path,
                        help="installed models folder (default: $RECOKD_MODELS_DIR or the per-user data folder)")
    p = subparsers.add_parser("models", help="list, add or remove installed model packages")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="list installed models")
    listing.add_argument("--json", action="store_true", help="print a JSON list (for programs)")
    listing.set_defaults(func=run_list)
    add = actions.add_parser("add", parents=[common], help="validate and install a package file")
    add.add_argument("file", type=Path, help="model package, NAME.recokd.zip")
    add.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    add.set_defaults(func=run_add)
    remove = actions.add_parser("remove", parents=[common], help="delete an installed model")
    remove.add_argument("name", help="model name as `recokd models list` shows it")
    remove.set_defaults(func=run_remove)


def run_list(args) -> int:
    from recokd.package.registry import default_models_dir, list_models

    folder = args.models_dir or default_models_dir()
    models = list_models(folder)
    if args.json:
        for model in models:
            if model.error:
                log.warning("Skipping broken model %s: %s", model.name, model.error)
        print(json.dumps([m.to_dict() for m in models if not m.error], indent=2))
        return 0
    if not models:
        print(f"No models installed in {folder}.")
        return 0
    print(f"Models in {folder}:")
    for model in models:
        if model.error:
            print(f"  {model.name}  BROKEN: {model.error}")
        else:
            names = ", ".join(label.name for label in model.labels)
            print(f"  {model.name}  [{names}]  {model.description}")
    return 0


def run_add(args) -> int:
    from recokd.package.registry import install_model

    model = install_model(args.file, args.models_dir, overwrite=args.overwrite)
    print(f"Installed '{model.name}' at {model.path}")
    return 0


def run_remove(args) -> int:
    from recokd.package.registry import remove_model

    path = remove_model(args.name, args.models_dir)
    print(f"Removed {path}")
    return 0

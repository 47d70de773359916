"""PROTOCOL STAND-IN for the ``recokd`` command line in the panel tests: the bridge tests'
stand-in (``Testing/bridge/recokd_protocol_standin.py``, which see), plus what a panel needs
from ``recokd`` that it does not do:

- ``models list --json``: the models the bridge stand-in knows, by the names that switch its
  behaviour: ``threshold`` (any name but the switches: a quick thresholding) and ``slow``
  (reports progress until it is cancelled);
- ``distill``: reports its first epoch, then trains until it is stopped (the bridge stand-in's
  finishes at once, too soon for a Stop button to be clicked).

Everything else goes to the bridge stand-in unchanged.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridge"))
import recokd_protocol_standin as protocol  # noqa: E402

MODELS = [{"name": name, "path": name, "labels": protocol.LABELS, "description": description} for name, description in (
    ("threshold", "Protocol stand-in: thresholds the volume"), ("slow", "Protocol stand-in: runs until cancelled"))]


def distill_until_stopped(args) -> int:
    protocol.emit(event="progress", stage="training", epoch=1, epochs=args.epochs, fraction=1 / args.epochs,
                  message="train loss 0.9")
    while True:
        time.sleep(0.1)


def main() -> int:
    if sys.argv[1:3] == ["models", "list"]:
        print(json.dumps(MODELS), flush=True)
        return 0
    protocol.distill = distill_until_stopped  # the bridge stand-in's parser checks the arguments first
    return protocol.main()


if __name__ == "__main__":
    sys.exit(main())

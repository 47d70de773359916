"""``python -m recokd``: the same as the ``recokd`` console script (used by the Slicer module)."""

import sys

from recokd.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Small-structure analysis on the synthetic CT phantom: ``python phantom.py --schedule cpu``.

Any option of ``recokd benchmark`` may follow (``--schedule smoke|cpu|gpu``, ``--work-dir``, ...).
"""

import sys

from run_benchmark import run

if __name__ == "__main__":
    sys.exit(run("phantom", sys.argv[1:]))

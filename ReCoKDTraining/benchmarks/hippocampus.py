"""Teacher vs ReCo-KD / plain / logit-KD students on MSD Hippocampus: ``python hippocampus.py --schedule cpu``.

Any option of ``recokd benchmark`` may follow (``--schedule smoke|cpu|gpu``, ``--work-dir``, ...).
"""

import sys

from run_benchmark import run

if __name__ == "__main__":
    sys.exit(run("hippocampus", sys.argv[1:]))

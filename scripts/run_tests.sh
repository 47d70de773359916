#!/usr/bin/env bash
# One command for the whole test suite: sets up .venv with the test extras, lints with ruff,
# then runs pytest over Testing/ (core CPU tests, Slicer bridge tests on slicer-core, end to end).
# Extra arguments go to pytest, e.g. `scripts/run_tests.sh -k phantom`.
set -euo pipefail
# UTF-8 everywhere (progress bars and messages are not ASCII), whatever the locale says.
export PYTHONUTF8=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RECOKD_VENV:-$root/.venv}"
"$root/scripts/setup.sh" test
cd "$root"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest Testing "$@"

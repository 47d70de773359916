#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install recokd into it.
#
#   scripts/setup.sh            # runtime, with OpenVINO for fast CPU inference (where it has wheels)
#   scripts/setup.sh test       # plus the test extras (pytest, ruff, slicer-core, ONNX Runtime)
#
# Idempotent: a second run with the same pyproject/constraints/extras installs nothing.
# Environment:
#   PYTHON=python3.12         interpreter to build the venv from (3.10-3.12)
#   RECOKD_VENV=path          where the venv lives (default: .venv in the checkout)
#   RECOKD_TORCH_INDEX=url    extra package index for torch, e.g.
#                             https://download.pytorch.org/whl/cpu   (small CPU-only build)
#                             https://download.pytorch.org/whl/cu126 (a specific CUDA build)
#                             Plain PyPI already serves CUDA builds on Linux x86_64.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RECOKD_VENV:-$root/.venv}"
extras="openvino${1:+,$1}"

pick_python() {
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3.10 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "setup: no Python 3.10-3.12 found; set PYTHON=/path/to/python3.x" >&2
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  python="$(pick_python)"
  echo "setup: creating virtual environment $venv with $python"
  "$python" -m venv "$venv"
fi

stamp_file="$venv/.recokd-installed"
fingerprint="$(cat "$root/ReCoKDTraining/pyproject.toml" "$root/ReCoKDTraining/constraints.txt" \
  | sha256sum | cut -c1-16) ${RECOKD_TORCH_INDEX:-pypi}"
wanted="$fingerprint ${extras:-runtime}"
if [ -f "$stamp_file" ] && grep -qxF "$wanted" "$stamp_file"; then
  echo "setup: $venv is up to date (${extras:-runtime})"
  exit 0
fi

target="$root/ReCoKDTraining"
[ -n "$extras" ] && target="$target[$extras]"
index_args=()
[ -n "${RECOKD_TORCH_INDEX:-}" ] && index_args=(--extra-index-url "$RECOKD_TORCH_INDEX")
echo "setup: installing recokd${extras:+[$extras]} (torch pinned by ReCoKDTraining/constraints.txt)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q \
  -c "$root/ReCoKDTraining/constraints.txt" "${index_args[@]}" -e "$target"
# Keep earlier lines with the same fingerprint (other extras stay installed).
{ grep -s "^${fingerprint% *} " "$stamp_file" || true; echo "$wanted"; } > "$stamp_file.tmp"
mv "$stamp_file.tmp" "$stamp_file"
echo "setup: done"

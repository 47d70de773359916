#!/usr/bin/env bash
# Reproduce the shipped phantom teacher (Resources/Models/phantom-teacher.recokd.zip): the demo's
# seeded phantom data, nnU-Net's own trainer at half width (recokd demo --retrain-teacher), the
# package with its measured test Dice on the card, copied into Resources/Models.
# About 40 minutes on 2 idle CPU cores (250 epochs at ~8 s). Extra arguments go to `recokd demo`.
set -euo pipefail
export PYTHONUTF8=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${RECOKD_WORK_DIR:-$root/recokd_work/phantom_teacher}"
"$root/scripts/setup.sh"
"${RECOKD_VENV:-$root/.venv}/bin/recokd" demo --retrain-teacher --work-dir "$work" "$@"
mkdir -p "$root/Resources/Models"
cp "$work/packages/phantom-teacher.recokd.zip" "$root/Resources/Models/phantom-teacher.recokd.zip"
echo "Shipped $root/Resources/Models/phantom-teacher.recokd.zip"

"""The distillation options on the command line, shared by ``recokd distill`` and ``recokd benchmark``.

Every field of :class:`~recokd.distill.options.KDOptions` has one flag here; ``distill`` also
takes ``--mode`` and ``--init`` (a benchmark sets both per student arm).
"""

from __future__ import annotations

import argparse

from recokd.distill.options import (
    IMPORTANCE_CHOICES,
    INIT_CHOICES,
    KD_MODES,
    MS_CA_FORMS,
    REFIT_CHOICES,
    KDOptions,
)

DEFAULTS = KDOptions()
PER_ARM = ("mode", "init")  # what a benchmark chooses per student arm


def add_distillation_arguments(parser: argparse.ArgumentParser, per_arm: bool = True) -> None:
    """The KD option flags; ``per_arm=False`` leaves out ``--mode`` and ``--init``."""
    kd = parser.add_argument_group("distillation options (defaults: the method's published values)")
    if per_arm:
        kd.add_argument("--mode", choices=KD_MODES, default=DEFAULTS.mode,
                        help="recokd (MS-SARD + MS-CA), logit (baseline), none (student alone)")
    kd.add_argument("--ms-ca", choices=MS_CA_FORMS, default=DEFAULTS.ms_ca,
                    help="MS-CA form: gc (global-context blocks) or affinity (pooled voxel affinity)")
    kd.add_argument("--kd-weight", type=float, default=DEFAULTS.kd_weight, help="lambda after warm-up")
    kd.add_argument("--warmup-fraction", type=float, default=DEFAULTS.warmup_fraction)
    kd.add_argument("--alpha", type=float, default=DEFAULTS.alpha, help="stage weights ∝ 2^(-3 alpha k)")
    kd.add_argument("--attention-temperature", type=float, default=DEFAULTS.attention_temperature)
    kd.add_argument("--affinity-grid", type=int, default=DEFAULTS.affinity_grid)
    kd.add_argument("--logit-temperature", type=float, default=DEFAULTS.logit_temperature)
    kd.add_argument("--logit-weight", type=float, default=DEFAULTS.logit_weight,
                    help="lambda of the logit-KD baseline (mode logit) after warm-up")
    kd.add_argument("--ema-decay", type=float, default=DEFAULTS.ema_decay)
    kd.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate,
                    help="the student's initial learning rate (nnU-Net's poly schedule)")
    start = parser.add_argument_group("how the student starts")
    if per_arm:
        start.add_argument("--init", choices=INIT_CHOICES, default=DEFAULTS.init,
                           help="teacher: the teacher pruned to the student's width (every mode); random: "
                                "nnU-Net's own initialisation")
    start.add_argument("--init-importance", choices=IMPORTANCE_CHOICES, default=DEFAULTS.init_importance,
                       help="channel ranking: mean |activation| on calibration patches, or |gamma| of the norms")
    start.add_argument("--init-refit", choices=REFIT_CHOICES, default=DEFAULTS.init_refit,
                       help="refit each pruned layer to the teacher's output by least squares, or keep the slices")
    start.add_argument("--calibration-patches", type=int, default=DEFAULTS.calibration_patches,
                       help="training patches the teacher is measured on for pruning and refitting")


def options_from(args: argparse.Namespace) -> KDOptions:
    """The :class:`KDOptions` the flags describe (``mode`` and ``init`` keep their defaults when absent)."""
    return KDOptions.from_dict({name: getattr(args, name) for name in DEFAULTS.to_dict() if hasattr(args, name)})

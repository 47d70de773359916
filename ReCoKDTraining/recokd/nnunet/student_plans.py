"""Derive a student's nnU-Net plans from its teacher's: same everything, fewer channels.

A student is *a plans file*, not a new network class (nnU-Net's own idiom): depth, strides,
kernel sizes, patch and batch size, spacing, normalisation and ``data_identifier`` are the
teacher's, so the student trains on the teacher's preprocessed data without a second
preprocessing run; only every stage's channel count shrinks, ``C'_k = max(8, C_k / 2^t)``.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction

from recokd.errors import RecokdError

MIN_CHANNELS = 8
ALLOWED_WIDTHS = (Fraction(1), Fraction(1, 2), Fraction(1, 4), Fraction(1, 8))


def parse_width(text: str | float | Fraction) -> Fraction:
    """``"1/4"``, ``"0.25"`` or ``0.25`` -> ``Fraction(1, 4)``; only 1, 1/2, 1/4 and 1/8 are allowed."""
    try:
        width = Fraction(str(text)).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        width = None
    if width not in ALLOWED_WIDTHS:
        allowed = ", ".join(str(w) for w in ALLOWED_WIDTHS)
        raise RecokdError(f"Student width '{text}' is not supported; use one of {allowed}.")
    return width


def student_plans_identifier(teacher_plans_identifier: str, width: Fraction) -> str:
    return f"{teacher_plans_identifier}_ReCoKD_w{width.denominator}"


def derive_student_plans(teacher_plans: dict, configuration: str, width: Fraction) -> dict:
    """Plans for a student at ``width`` of the teacher, holding only ``configuration``.

    The configuration is resolved first (nnU-Net configurations may ``inherits_from``
    another), so the student plans are self-contained. Works for any
    ``dynamic_network_architectures`` class whose arguments carry ``features_per_stage``
    (``PlainConvUNet``, ``ResidualEncoderUNet``, ...).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if configuration not in teacher_plans.get("configurations", {}):
        known = sorted(teacher_plans.get("configurations", {}))
        raise RecokdError(f"The teacher's plans have no configuration '{configuration}' (it has {known}).")
    resolved = copy.deepcopy(PlansManager(teacher_plans).get_configuration(configuration).configuration)
    resolved.pop("inherits_from", None)
    arch_kwargs = resolved.get("architecture", {}).get("arch_kwargs", {})
    if "features_per_stage" not in arch_kwargs:
        raise RecokdError(
            f"The teacher's architecture {resolved.get('architecture', {}).get('network_class_name')} has no "
            "'features_per_stage'; only dynamic_network_architectures U-Nets can be narrowed."
        )
    shift = int(math.log2(width.denominator))
    arch_kwargs["features_per_stage"] = [max(MIN_CHANNELS, int(c) >> shift) for c in arch_kwargs["features_per_stage"]]

    plans = copy.deepcopy(teacher_plans)
    plans["plans_name"] = student_plans_identifier(teacher_plans["plans_name"], width)
    plans["configurations"] = {configuration: resolved}
    return plans

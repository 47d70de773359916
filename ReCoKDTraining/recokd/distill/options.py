"""The named options of the distillation (ReCo-KD, arXiv 2601.08301) and their validation.

Every weight, temperature and form the losses use is a field here, so one ``to_dict()`` records
exactly what a run used (checkpoints, model cards, benchmark results). The module imports no
torch, so the command line can parse options cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from recokd.errors import RecokdError

KD_MODES = ("recokd", "logit", "none")
MS_CA_FORMS = ("gc", "affinity")
INIT_CHOICES = ("teacher", "random")
IMPORTANCE_CHOICES = ("activation", "gamma")
REFIT_CHOICES = ("least_squares", "none")


@dataclass
class KDOptions:
    """How the student is distilled; the defaults are the method's published values.

    Attributes:
        mode: ``"recokd"`` (MS-SARD + MS-CA on encoder features), ``"logit"`` (baseline:
            temperature-scaled KL on the outputs) or ``"none"`` (student alone, lambda = 0).
        kd_weight: lambda, the weight of the distillation term once warm-up is over.
        warmup_fraction: lambda ramps linearly from 0 to ``kd_weight`` over this fraction
            of the epochs (0 disables the ramp).
        alpha: stage weights ``w_k`` are proportional to ``2^(-3 * alpha * k)``, normalised to sum
            1, so high-resolution stages dominate; 0 weighs all stages equally.
        attention_temperature: T of MS-SARD's spatial and channel attention softmaxes.
        ms_ca: MS-CA form: ``"gc"`` (global-context blocks, the authors' form) or
            ``"affinity"`` (pooled voxel-affinity matrices).
        affinity_grid: side of the pooled grid of the affinity form (at most ``grid^3`` voxels).
        fg_weight, bg_weight, att_weight, ctx_weight: weights of L_fg, L_bg, L_att and L_ctx.
        logit_temperature: temperature of the logit-KD baseline.
        logit_weight: lambda of the logit-KD baseline (mode ``"logit"``), ramped like ``kd_weight``.
        ema_decay: decay of the exponential moving average of the student's weights.
        learning_rate: the student's initial learning rate (nnU-Net's poly schedule, SGD).
        init: ``"teacher"``: the student starts as the teacher pruned to its width
            (:mod:`recokd.nnunet.inheritance`), in every mode; ``"random"``: nnU-Net's own
            initialisation.
        init_importance: how inheritance ranks channels, ``"activation"`` or ``"gamma"``.
        init_refit: ``"least_squares"`` refits every pruned layer to the teacher's output,
            ``"none"`` keeps the sliced weights.
        calibration_patches: training patches inheritance measures the teacher on.
        soft_target_weight: weight of the logit-KD term (at ``logit_temperature``) on the cases
            whose targets are the teacher's labels (``distill --images`` without a label file),
            mode ``"recokd"`` only; 0 = off. Not ramped: those cases learn the teacher's hard
            labels from the first step, the soft targets add its confidence.
        labeled_share: the probability that a sampled training case is a labeled one when a
            dataset mixes labeled and teacher-labelled cases (``distill --images --labels``);
            -1 samples every case equally, as nnU-Net does.
    """

    mode: str = "recokd"
    kd_weight: float = 0.01
    warmup_fraction: float = 0.6
    alpha: float = 0.5
    attention_temperature: float = 0.5
    ms_ca: str = "gc"
    affinity_grid: int = 8
    fg_weight: float = 1.0
    bg_weight: float = 1.0
    att_weight: float = 1.0
    ctx_weight: float = 1.0
    logit_temperature: float = 2.0
    logit_weight: float = 1.0
    ema_decay: float = 0.999
    learning_rate: float = 0.01
    init: str = "teacher"
    init_importance: str = "activation"
    init_refit: str = "least_squares"
    calibration_patches: int = 16
    soft_target_weight: float = 0.0
    labeled_share: float = -1.0

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise RecokdError("Invalid distillation options: " + "; ".join(problems) + ".")

    def _problems(self) -> list[str]:
        checks = [
            (self.mode in KD_MODES, f"mode must be one of {', '.join(KD_MODES)}, got {self.mode!r}"),
            (self.ms_ca in MS_CA_FORMS, f"ms_ca must be one of {', '.join(MS_CA_FORMS)}, got {self.ms_ca!r}"),
            (self.init in INIT_CHOICES, f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}"),
            (self.init_importance in IMPORTANCE_CHOICES,
             f"init_importance must be one of {', '.join(IMPORTANCE_CHOICES)}, got {self.init_importance!r}"),
            (self.init_refit in REFIT_CHOICES,
             f"init_refit must be one of {', '.join(REFIT_CHOICES)}, got {self.init_refit!r}"),
            (self.calibration_patches >= 1, f"calibration_patches must be >= 1, got {self.calibration_patches}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.kd_weight >= 0, f"kd_weight must be >= 0, got {self.kd_weight}"),
            (0 <= self.warmup_fraction <= 1, f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.attention_temperature > 0, f"attention_temperature must be > 0, got {self.attention_temperature}"),
            (self.affinity_grid >= 1, f"affinity_grid must be >= 1, got {self.affinity_grid}"),
            (self.logit_temperature > 0, f"logit_temperature must be > 0, got {self.logit_temperature}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.soft_target_weight == 0 or self.mode == "recokd",
             f"soft_target_weight applies to mode recokd only (mode {self.mode!r} "
             f"{'already distils the logits' if self.mode == 'logit' else 'runs no teacher'})"),
            (self.labeled_share == -1 or 0 <= self.labeled_share <= 1,
             f"labeled_share must be in [0, 1] (or -1: every case equally), got {self.labeled_share}"),
        ]
        for name in ("fg_weight", "bg_weight", "att_weight", "ctx_weight", "logit_weight", "soft_target_weight"):
            value = getattr(self, name)
            checks.append((value >= 0, f"{name} must be >= 0, got {value}"))
        return [message for ok, message in checks if not ok]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every option."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KDOptions:
        """Options from a (possibly partial) dict; missing keys keep their defaults.

        Raises:
            RecokdError: an unknown key, a value of the wrong type, or a value out of range.
        """
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(types))
        if unknown:
            raise RecokdError(
                f"Unknown distillation option(s) {', '.join(unknown)}; known options: {', '.join(types)}."
            )
        return cls(**{name: _coerce(name, value, types[name]) for name, value in d.items()})


_TYPES = {"str": (str, "a string"), "int": (int, "an integer"), "float": (float, "a number")}


def _coerce(name: str, value: object, type_name: str) -> str | int | float:
    """``value`` as the field's type (``"str"``, ``"int"`` or ``"float"``), or a RecokdError."""
    target, description = _TYPES[type_name]
    if target is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if target is int:
            ok = ok and float(value).is_integer()
    if not ok:
        raise RecokdError(f"Distillation option {name} must be {description}, got {value!r}.")
    return target(value)

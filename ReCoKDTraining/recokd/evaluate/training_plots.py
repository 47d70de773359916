"""Plots of a distillation run, next to nnU-Net's own ``progress.png``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KD_TERMS = ("kd_fg", "kd_bg", "kd_att", "kd_ctx")


def plot_distillation_progress(logged: dict, out_folder: Path) -> Path:
    """``distillation_progress.png``: segmentation loss, lambda * L_kd and each KD term per epoch.

    ``logged`` is nnU-Net's per-epoch log (``LocalLogger.my_fantastic_logging``) with the keys
    the ReCoKD trainer adds (``seg_loss``, ``kd_*``, ``kd_lambda``).
    """
    epochs = range(len(logged.get("seg_loss", [])))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(epochs, logged["seg_loss"], label="segmentation loss (Dice + CE)")
    top.plot(epochs, [lam * kd for lam, kd in zip(logged["kd_lambda"], logged["kd_total"])],
             label="lambda x KD loss")
    if logged.get("mean_fg_dice"):
        twin = top.twinx()
        twin.plot(range(len(logged["mean_fg_dice"])), logged["mean_fg_dice"], "g:", label="pseudo Dice (EMA weights)")
        twin.set_ylabel("pseudo Dice")
        twin.legend(loc="upper right")
    top.set_ylabel("loss")
    top.legend(loc="upper left")
    terms = [key for key in KD_TERMS if any(logged.get(key, []))]
    for key in terms:
        bottom.plot(epochs, logged[key], label=key.removeprefix("kd_"))
    bottom.set_yscale("symlog", linthresh=1e-4)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("KD term (stage-weighted)")
    if terms:
        bottom.legend(loc="upper right")
    else:  # logit KD and the plain student have no feature terms
        bottom.text(0.5, 0.5, "no feature-distillation terms in this mode", ha="center", va="center",
                    transform=bottom.transAxes)
    fig.suptitle("ReCo-KD distillation")
    fig.tight_layout()
    out = Path(out_folder) / "distillation_progress.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out

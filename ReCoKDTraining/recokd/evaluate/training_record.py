"""What a training went through, read back from its final nnU-Net checkpoint.

nnU-Net keeps its per-epoch log in every checkpoint (``logging``): the pseudo Dice of each
foreground class on the validation batches, the training loss and the epoch timestamps.
The benchmark records it per model, so the report can show when each model left nnU-Net's
all-background phase and when each structure, small ones included, first appeared: the
pseudo Dice is 0 while a network still predicts background everywhere.
"""

from __future__ import annotations

from pathlib import Path

from recokd.nnunet.checkpoint import load_checkpoint


def training_record(result_folder: Path, fold: int | str = 0) -> dict:
    """``{epochs, seconds, pseudo_dice, pseudo_dice_per_class, train_loss[, kd_weighted]}`` of a finished training.

    ``pseudo_dice`` is nnU-Net's mean foreground pseudo Dice per epoch (validation batches,
    a student's EMA weights), ``pseudo_dice_per_class`` one list per epoch in label order,
    ``seconds`` the sum of the epochs' durations (an interruption's gap is not counted).
    ``train_loss`` is the epoch's mean training loss; for a ReCoKD student it includes
    ``kd_weighted``, lambda times the distillation loss, per epoch (absent for a teacher).
    """
    logged = load_checkpoint(Path(result_folder) / f"fold_{fold}" / "checkpoint_final.pth")["logging"]
    durations = [end - start for start, end in zip(logged["epoch_start_timestamps"], logged["epoch_end_timestamps"])]
    record = {
        "epochs": len(durations),
        "seconds": float(sum(durations)),
        "pseudo_dice": [float(v) for v in logged["mean_fg_dice"]],
        "pseudo_dice_per_class": [[float(v) for v in epoch] for epoch in logged["dice_per_class_or_region"]],
        "train_loss": [float(v) for v in logged["train_losses"]],
    }
    if "kd_total" in logged:
        record["kd_weighted"] = [float(lam * kd) for lam, kd in zip(logged["kd_lambda"], logged["kd_total"])]
    return record

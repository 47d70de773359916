"""nnU-Net v2's trainer with ReCo-KD added to its training step.

Everything nnU-Net does stays as it is: data loading, augmentation, deep supervision, poly
learning rate, AMP on GPU, validation, logging. The subclass adds, in the nnU-Net idiom:

* ``initialize``: load the frozen teacher, hook both encoders, build the KD loss (adapters
  and MS-CA blocks get their own optimiser parameter group), start the EMA of the student;
* ``train_step``: one extra term, ``lambda(epoch) * L_kd``; the EMA update after the step;
* validation on the EMA weights (what is exported);
* checkpoints that also hold the EMA, the KD modules and the options, written atomically
  every epoch, so an interruption loses at most one epoch and a resume continues exactly;
* DDP on CPU (gloo) as well as on GPUs (nnU-Net assumes CUDA once a process group exists).

On a dataset of the user's scans (``distill --images``), the cases whose targets are the
teacher's labels can add the teacher's soft targets (``soft_target_weight``) and be drawn at a
set share against the labeled ones (``labeled_share``, :mod:`recokd.nnunet.case_sampling`).

The mode is the class, as nnU-Net names its trainer variants, so the three students of a
comparison land in three result folders: :class:`ReCoKDTrainer` (MS-SARD + MS-CA),
:class:`ReCoKDTrainer_logitKD` and :class:`ReCoKDTrainer_noKD`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.nn.parallel import DistributedDataParallel

from recokd.distill.hooks import EncoderFeatureHooks, unwrap_network
from recokd.distill.logit_kd import LogitKDLoss
from recokd.distill.options import KDOptions
from recokd.distill.recokd_loss import ReCoKDLoss
from recokd.distill.schedule import kd_weight_at
from recokd.errors import RecokdError
from recokd.nnunet.case_sampling import case_probabilities, sampling_probabilities
from recokd.nnunet.checkpoint import load_checkpoint, save_atomically
from recokd.nnunet.ema import StudentEMA
from recokd.nnunet.inheritance import (
    Inheritance,
    adapters_from_selection,
    calibration_batches,
    inherit_from_teacher,
)
from recokd.nnunet.teacher import Teacher, check_preprocessed_data, check_student_fits_teacher, load_teacher
from recokd.scans.dataset import teacher_labelled_cases

NNUNET_DEFAULT_DEVICE = torch.device("cuda")  # nnUNetTrainer's own default
KD_LOG_KEYS = ("seg_loss", "kd_fg", "kd_bg", "kd_att", "kd_ctx", "kd_total", "kd_lambda", "kd_soft")


@contextmanager
def _ddp_without_device_ids():
    """nnU-Net wraps the network as ``DDP(net, device_ids=[rank])``, which fails for CPU modules.

    For a CPU (gloo) process group the device ids must be omitted; this swaps nnU-Net's
    reference to DDP for the duration of ``initialize`` only.
    """
    original = nnunet_trainer_module.DDP

    def cpu_ddp(module, device_ids=None, **kwargs):
        return original(module, **kwargs)

    nnunet_trainer_module.DDP = cpu_ddp
    try:
        yield
    finally:
        nnunet_trainer_module.DDP = original


class ReCoKDTrainer(nnUNetTrainer):
    """Student training with ReCo-KD (MS-SARD + MS-CA); set the attributes below before ``initialize``.

    Attributes:
        kd_options: :class:`KDOptions` (its ``mode`` is fixed by the class).
        teacher_folder: the teacher's nnU-Net results folder (``<Trainer>__<Plans>__<config>``).
        teacher_fold, teacher_checkpoint: which of its checkpoints teaches.
        student_width: recorded in checkpoints and the model card (e.g. ``"1/4"``).
        on_step: optional callable ``(epoch, iteration, values)`` called after every step.
    """

    kd_mode = "recokd"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = NNUNET_DEFAULT_DEVICE):
        self._resuming = bool(plans.get("continue_training"))  # nnU-Net pops the key
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp and device.type == "cpu":
            # nnU-Net assumes CUDA under DDP; keep the CPU the caller asked for (gloo backend).
            self.device = device
            self.grad_scaler = None
        self.kd_options = KDOptions(mode=self.kd_mode)
        self.teacher_folder: Path | None = None
        self.teacher_fold: int | str = 0
        self.teacher_checkpoint = "checkpoint_final.pth"
        self.student_width = "1"
        self.on_step = None
        self.save_every = 1  # an interruption loses at most one epoch
        self.teacher: Teacher | None = None
        self._teacher_description: dict | None = None
        self.kd_loss: torch.nn.Module | None = None
        self.student_hooks: EncoderFeatureHooks | None = None
        self.teacher_hooks: EncoderFeatureHooks | None = None
        self.ema: StudentEMA | None = None
        self.inheritance: Inheritance | None = None
        self.inheritance_record: dict | None = None  # what inheritance did (Inheritance.describe), kept on resume
        self.teacher_labelled: frozenset[str] = frozenset()  # cases whose targets are the teacher's labels
        self.soft_target_loss: LogitKDLoss | None = None
        self._live_weights: dict | None = None
        self._iteration = 0

    # ----------------------------------------------------------------------------- set-up
    def _do_i_compile(self) -> bool:
        """Never compile the networks: forward hooks on a compiled graph are unreliable."""
        return False

    def _compile_kd_loss(self) -> bool:
        """Compile the ReCo-KD loss where nnU-Net would compile its network (CUDA, ``nnUNet_compile`` not off).

        The loss is hundreds of small operations, forward and backward: on a GPU they leave the
        step bound by kernel launches. Compiled in ``reduce-overhead`` mode, they are fused and
        replayed as CUDA graphs (on an H100, Hippocampus patch: KD step 1.41x the plain step,
        against 1.83x fused only and 2.09x eager). Under DDP, where CUDA graphs were not
        measured, the loss is only fused. The loss takes plain tensors, so no hook is involved.
        """
        return super()._do_i_compile()

    def initialize(self) -> None:
        if self.kd_options.mode != self.kd_mode:
            raise RecokdError(f"{type(self).__name__} trains mode '{self.kd_mode}', options say '{self.kd_options.mode}'.")
        self.initial_lr = self.kd_options.learning_rate  # read by configure_optimizers in nnU-Net's initialize
        with _ddp_without_device_ids() if self.is_ddp and self.device.type == "cpu" else nullcontext():
            super().initialize()
        for key in KD_LOG_KEYS:
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        student = unwrap_network(self.network)
        inherit = self.kd_options.init == "teacher" and not self._resuming  # a resume loads its weights
        if self.kd_mode != "none" or inherit:
            self._set_up_teacher()
        if inherit:
            self._inherit_from_teacher(student)
        self.ema = StudentEMA(student, self.kd_options.ema_decay)
        if self.kd_mode == "none":
            self.teacher = self.teacher_hooks = None  # only needed to start from
        if self.kd_mode == "recokd":
            self.student_hooks = EncoderFeatureHooks(student)
            self.kd_loss = ReCoKDLoss(self.student_hooks.channels, self.teacher_hooks.channels, self.kd_options,
                                      ignore_label=self.label_manager.ignore_label,
                                      num_classes=self.label_manager.num_segmentation_heads).to(self.device)
            if self.inheritance is not None:
                adapters_from_selection(self.kd_loss.adapters, self.inheritance)
                self._broadcast_from_rank_0(self.kd_loss)
            self.optimizer.add_param_group({"params": list(self.kd_loss.parameters())})
            if self._compile_kd_loss():
                mode = "default" if self.is_ddp else "reduce-overhead"
                self.print_to_log_file(f"Using torch.compile (mode {mode}) for the ReCo-KD loss")
                self.kd_loss = torch.compile(self.kd_loss, mode=mode)
            if self.is_ddp:  # adapters and MS-CA blocks are trained: their gradients must be averaged too
                self.kd_loss = DistributedDataParallel(self.kd_loss)
        elif self.kd_mode == "logit":
            self.kd_loss = LogitKDLoss(self.kd_options.logit_temperature)
        self.teacher_labelled = teacher_labelled_cases(Path(self.preprocessed_dataset_folder_base))
        if self.kd_options.soft_target_weight > 0:
            self.soft_target_loss = LogitKDLoss(self.kd_options.logit_temperature)

    def _set_up_teacher(self) -> None:
        if self.teacher_folder is None:
            raise RecokdError("No teacher given: set teacher_folder (recokd distill --teacher).")
        self.teacher = load_teacher(self.teacher_folder, self.teacher_fold, self.teacher_checkpoint, self.device,
                                    dataset_json=self.dataset_json)
        check_preprocessed_data(self.teacher, Path(self.preprocessed_dataset_folder_base))
        check_student_fits_teacher(self.configuration_manager.configuration,
                                   self.teacher.plans["configurations"][self.teacher.configuration])
        self.teacher_hooks = EncoderFeatureHooks(self.teacher.network, detach=True)
        self._teacher_description = self.teacher.describe()

    def _inherit_from_teacher(self, student: torch.nn.Module) -> None:
        """Start the student as the pruned (and refitted) teacher on calibration patches of this fold."""
        options = self.kd_options
        seed = torch.initial_seed() % 2**32  # the training's seed: each seed draws its own calibration patches
        batches = calibration_batches(self, options.calibration_patches, seed)
        self.inheritance = inherit_from_teacher(self.teacher.network, student, batches, options.init_importance,
                                                options.init_refit, seed)
        self._broadcast_from_rank_0(student)
        self.inheritance_record = self.inheritance.describe()
        self.print_to_log_file(f"Student initialised from the teacher: {self.inheritance_record}")

    def _broadcast_from_rank_0(self, module: torch.nn.Module) -> None:
        """Under DDP every rank must start from rank 0's weights (calibration runs per rank)."""
        if self.is_ddp:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, 0)

    # ----------------------------------------------------------------------------- training
    def _teacher_autocast(self):
        if self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _distillation_terms(self, data: torch.Tensor, output, target, keys) -> dict[str, torch.Tensor]:
        """KD terms for this batch (``keys``: its cases); the student's forward (and its hooks) already ran."""
        with torch.no_grad(), self._teacher_autocast():
            teacher_logits = self.teacher.network(data)
        student_logits = output[0] if isinstance(output, (list, tuple)) else output
        if self.kd_mode == "logit":
            return {"total": self.kd_loss(student_logits, teacher_logits)}
        targets = target if isinstance(target, list) else [target]
        terms = self.kd_loss(self.student_hooks.features, self.teacher_hooks.features, targets)
        if self.soft_target_loss is not None:
            terms["soft"] = self._soft_targets(student_logits, teacher_logits, keys)
        return terms

    def _soft_targets(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, keys) -> torch.Tensor:
        """Logit KD over the samples whose cases the teacher labelled (0 when the batch has none)."""
        rows = [i for i, key in enumerate(keys) if key in self.teacher_labelled]
        if not rows:
            return student_logits.new_zeros(())
        rows = torch.tensor(rows, device=student_logits.device)
        return self.soft_target_loss(student_logits[rows], teacher_logits[rows])

    def _trained_parameters(self):
        yield from self.network.parameters()
        if self.kd_loss is not None:
            yield from self.kd_loss.parameters()

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step plus ``lambda(epoch) * L_kd`` (``lambda = 0`` for the plain student)."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else nullcontext()
        with autocast:
            output = self.network(data)
            seg_loss = self.loss(output, target)
            terms = self._distillation_terms(data, output, target, batch.get("keys", ())) \
                if self.kd_mode != "none" else {}
            kd_lambda = kd_weight_at(self.current_epoch, self.num_epochs, self.kd_options)
            loss = seg_loss + kd_lambda * terms["total"] if terms else seg_loss
            if "soft" in terms:
                loss = loss + self.kd_options.soft_target_weight * terms["soft"]

        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self._trained_parameters()), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self._trained_parameters()), 12)
            self.optimizer.step()
        self.ema.update(unwrap_network(self.network))

        # One device-to-host copy for all logged scalars: each separate copy would stall a GPU step.
        names = ["loss", "seg_loss", *(f"kd_{name}" for name in terms)]
        scalars = torch.stack([loss.detach(), seg_loss.detach(), *(v.detach() for v in terms.values())]).float()
        values = dict(zip(names, scalars.cpu().numpy()))
        values["kd_lambda"] = np.float64(kd_lambda)
        self._iteration += 1
        if self.on_step is not None:
            self.on_step(self.current_epoch, self._iteration, values)
        return values

    def get_dataloaders(self):
        """nnU-Net's loaders, drawing labeled cases at ``labeled_share`` when the dataset mixes them with teacher-labelled ones."""
        share = self.kd_options.labeled_share
        with sampling_probabilities(lambda identifiers: case_probabilities(identifiers, self.teacher_labelled, share)):
            return super().get_dataloaders()

    def on_train_epoch_start(self) -> None:
        self._iteration = 0
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        for key in KD_LOG_KEYS:
            values = [float(o[key]) for o in train_outputs if key in o]
            mean = float(np.mean(values)) if values else 0.0
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, mean)
                mean = float(np.mean(gathered))
            self.logger.log(key, mean, self.current_epoch)
        self.print_to_log_file("distillation: " + ", ".join(
            f"{key} {self.logger.get_value(key, step=-1):.4g}" for key in KD_LOG_KEYS))

    # ----------------------------------------------------------------------------- validation on EMA
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        student = unwrap_network(self.network)
        self._live_weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
        student.load_state_dict(self.ema.state)

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        unwrap_network(self.network).load_state_dict(self._live_weights)
        self._live_weights = None

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.local_rank == 0:
            from recokd.evaluate.training_plots import plot_distillation_progress

            plot_distillation_progress(self.logger.local_logger.my_fantastic_logging, Path(self.output_folder))

    def on_train_end(self) -> None:
        super().on_train_end()
        for hooks in (self.student_hooks, self.teacher_hooks):
            if hooks is not None:
                hooks.remove()

    # ----------------------------------------------------------------------------- checkpoints
    def _recokd_state(self) -> dict:
        kd_modules = unwrap_network(self.kd_loss).state_dict() if self.kd_loss is not None else {}
        return {
            "ema_weights": self.ema.state,
            "ema_updates": self.ema.num_updates,
            "kd_modules": kd_modules,
            "options": self.kd_options.to_dict(),
            "teacher": self._teacher_description,
            "inheritance": self.inheritance_record,
            "width": self.student_width,
        }

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint keys plus ``"recokd"``; written atomically (temp file + rename)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        save_atomically({
            "network_weights": unwrap_network(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": type(self).__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "recokd": self._recokd_state(),
        }, Path(filename))

    def load_checkpoint(self, filename_or_checkpoint: str | Path) -> None:
        """Resume: nnU-Net's state, then the EMA and KD modules; refuses changed options."""
        path = Path(filename_or_checkpoint)
        saved = load_checkpoint(path).get("recokd")
        if saved is None:
            raise RecokdError(f"{path} was not written by a ReCoKD trainer; it cannot be resumed here.")
        saved_options = KDOptions.from_dict(saved["options"]).to_dict()  # options added since then: their defaults
        if saved_options != self.kd_options.to_dict():
            changed = {k: (v, self.kd_options.to_dict().get(k)) for k, v in saved_options.items()
                       if self.kd_options.to_dict().get(k) != v}
            raise RecokdError(f"Cannot resume {path} with different distillation options "
                              f"(saved vs now: {changed}); resume with the same options or start a new run.")
        super().load_checkpoint(str(path))
        self.inheritance_record = saved.get("inheritance")
        self.ema.load(saved["ema_weights"], saved["ema_updates"])
        if self.kd_loss is not None and saved["kd_modules"]:
            unwrap_network(self.kd_loss).load_state_dict(saved["kd_modules"])


class ReCoKDTrainer_logitKD(ReCoKDTrainer):  # noqa: N801 (nnU-Net's variant naming)
    """Baseline: the same student distilled with temperature-scaled KL on the logits only."""

    kd_mode = "logit"


class ReCoKDTrainer_noKD(ReCoKDTrainer):  # noqa: N801 (nnU-Net's variant naming)
    """Baseline: the same student, schedule and EMA without any distillation (lambda = 0)."""

    kd_mode = "none"


TRAINERS = {cls.kd_mode: cls for cls in (ReCoKDTrainer, ReCoKDTrainer_logitKD, ReCoKDTrainer_noKD)}

"""ReCo-KD distillation (arXiv 2601.08301): losses, feature hooks, schedules. Training only.

- :mod:`~recokd.distill.options`: ``KDOptions``, every named option (no torch import).
- :mod:`~recokd.distill.schedule`: stage weights ``w_k`` and the lambda ramp.
- :mod:`~recokd.distill.hooks`: ``EncoderFeatureHooks`` on nnU-Net encoder stages.
- :mod:`~recokd.distill.masks`: class-aware, scale-normalised masks from the labels.
- :mod:`~recokd.distill.ms_sard`, :mod:`~recokd.distill.ms_ca`: the two per-stage losses.
- :mod:`~recokd.distill.recokd_loss`: ``ReCoKDLoss``, adapters + both losses over all stages.
- :mod:`~recokd.distill.logit_kd`: ``LogitKDLoss``, the logit-distillation baseline.
"""

"""Running a model package: ``StudentPredictor`` (:mod:`.predictor`) and what surrounds it.

:mod:`.predictor` (nnU-Net's sliding window with progress, cancel and out-of-memory retries),
:mod:`.label_map` (logits back to labels one class at a time), :mod:`.resampling` (nnU-Net's
default resampling in bounded memory), :mod:`.validation` (input checks), :mod:`.image_io` and
:mod:`.nifti_check` (reading volumes, atomic label writes), :mod:`.seg_nrrd` (Slicer
segmentation header), :mod:`.jobs` (inputs to outputs for ``recokd segment``), :mod:`.progress`
(events, cancel token, reporters), :mod:`.memory`.
"""

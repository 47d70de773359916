"""Export -> package -> load -> segment gives what nnU-Net predicts with the trained network, up to ties.

``recokd segment`` runs nnU-Net's sliding window with tiles batched (up to four per forward
pass); batched, oneDNN picks other kernels and sums in another order, and the logits go back to
the input grid with PyTorch's float32 resampling, so a voxel whose two best classes are within
rounding of each other may flip. The labels must agree everywhere
else: every voxel that differs is a near-tie in nnU-Net's own probabilities. (Bit equality
at one tile per pass is tested in ``core/test_sliding_window.py``.)
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from conftest import json_lines, recokd


def test_package_segmentation_equals_nnunet_prediction_from_the_results_folder(
        tiny_pipeline, tiny_teacher_package, phantom_test_case, tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    image_path, _ = phantom_test_case
    out = tmp_path / "package.nii.gz"
    result = recokd("segment", "-m", str(tiny_teacher_package), "-i", str(image_path), "-o", str(out),
                    "--device", "cpu", "--backend", "torch", "--progress", "json", env=tiny_pipeline.env)
    assert json_lines(result.stdout)[-1]["event"] == "result"

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                device=__import__("torch").device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(tiny_pipeline.teacher), use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    reference = tmp_path / "nnunet"
    reference.mkdir()
    predictor.predict_from_files([[str(image_path)]], [str(reference / "case")], save_probabilities=True,
                                 overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    ours, theirs = sitk.ReadImage(str(out)), sitk.ReadImage(str(reference / "case.nii.gz"))
    differ = sitk.GetArrayFromImage(ours) != sitk.GetArrayFromImage(theirs)
    assert differ.mean() <= 1e-3, f"{differ.sum()} of {differ.size} voxels differ"
    probabilities = np.load(reference / "case.npz")["probabilities"]  # (classes, z, y, x), nnU-Net's own
    assert probabilities.shape[1:] == differ.shape
    top_two = np.sort(probabilities[:, differ], axis=0)[-2:]
    assert np.all(top_two[1] - top_two[0] < 1e-3), "only near-ties may flip"
    source = sitk.ReadImage(str(image_path))
    for image in (ours, theirs):
        assert image.GetSize() == source.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), source.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-4)

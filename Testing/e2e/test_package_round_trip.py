"""Export -> package -> load -> segment gives exactly what nnU-Net predicts with the trained network."""

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
                    "--device", "cpu", "--progress", "json", env=tiny_pipeline.env)
    assert json_lines(result.stdout)[-1]["event"] == "result"

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                device=__import__("torch").device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(tiny_pipeline.teacher), use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    reference = tmp_path / "nnunet"
    reference.mkdir()
    predictor.predict_from_files([[str(image_path)]], [str(reference / "case")], save_probabilities=False,
                                 overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    ours, theirs = sitk.ReadImage(str(out)), sitk.ReadImage(str(reference / "case.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
    source = sitk.ReadImage(str(image_path))
    for image in (ours, theirs):
        assert image.GetSize() == source.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), source.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-4)

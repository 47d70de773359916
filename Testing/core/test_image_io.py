"""Reading volumes (and refusing bad ones), DICOM series choice, input checks, atomic and Slicer-ready writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_student import LABELS, UID_ROOT, oblique_volume, write_dicom_series, write_volume

from recokd.errors import CancelledError, RecokdError
from recokd.inference import image_io
from recokd.inference.image_io import dicom_series, labels_like, read_image, volume_array, write_labels
from recokd.inference.validation import channels_first, check_finite, nnunet_spacing
from recokd.package.model import LabelInfo, Terminology


@pytest.fixture()
def volume():
    return oblique_volume(size_xyz=(12, 10, 6), spacing=(0.9, 0.9, 2.0))


# ---------------------------------------------------------------- reading files


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(RecokdError, match="Input not found"):
        read_image(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("name, message", [("notes.nii.gz", "damaged or cut short"), ("notes.nrrd", "Cannot read")])
def test_a_file_that_is_no_image_is_refused(tmp_path, name, message):
    path = tmp_path / name
    path.write_bytes(b"not an image at all" * 20)
    with pytest.raises(RecokdError, match=message):
        read_image(path)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_nan_in_a_nifti_is_refused_although_itk_would_read_it_as_zero(tmp_path, volume, name):
    array = sitk.GetArrayFromImage(volume).astype(np.float32)
    array[1, 2, 3], array[2, 3, 4] = np.nan, -np.inf
    path = write_volume(sitk.GetImageFromArray(array), tmp_path / name)
    assert np.isfinite(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))).all()  # what ITK alone would give
    with pytest.raises(RecokdError, match=f"2 of {array.size} voxels are NaN or infinite"):
        read_image(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_a_truncated_nifti_is_refused_although_itk_would_zero_fill_it(tmp_path, volume, name):
    whole = write_volume(volume, tmp_path / f"whole{name[3:]}")
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(RecokdError, match="truncated|cut short"):
        read_image(tmp_path / name)
    assert read_image(whole).GetSize() == volume.GetSize()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_supported_formats_read_back_with_geometry(tmp_path, volume, suffix):
    image = read_image(write_volume(volume, tmp_path / f"case{suffix}"))
    assert image.GetSize() == volume.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), volume.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), volume.GetDirection(), atol=1e-6)


def test_volume_array_refuses_2d_and_vector_images(volume):
    with pytest.raises(RecokdError, match="2D"):
        volume_array(volume[:, :, 0])
    with pytest.raises(RecokdError, match="components per voxel"):
        volume_array(sitk.Compose(volume, volume, volume))


def test_volume_array_gives_zyx_voxels_and_xyz_spacing(volume):
    array, spacing = volume_array(volume)
    assert array.shape == volume.GetSize()[::-1]
    assert spacing == volume.GetSpacing()


def test_labels_like_copies_3d_geometry_also_from_a_4d_reference(volume):
    labels = np.zeros(volume.GetSize()[::-1], dtype=np.uint8)
    for reference in (volume, sitk.JoinSeries([volume, volume])):
        image = labels_like(labels, reference)
        assert (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()) == (
            volume.GetSize(), volume.GetSpacing(), volume.GetOrigin(), volume.GetDirection()
        )


# ---------------------------------------------------------------- DICOM


def test_a_dicom_folder_with_one_series_reads_as_a_volume(tmp_path, volume):
    write_dicom_series(tmp_path / "dicom", volume, f"{UID_ROOT}.2.1", "AX CT")
    image = read_image(tmp_path / "dicom")
    assert image.GetSize() == volume.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), volume.GetSpacing(), rtol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), volume.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(volume))


def test_several_dicom_series_are_refused_with_their_uids_and_the_series_flag(tmp_path, volume):
    first, second = f"{UID_ROOT}.2.1", f"{UID_ROOT}.2.2"
    write_dicom_series(tmp_path / "dicom", volume, first, "AX CT")
    write_dicom_series(tmp_path / "dicom", volume[:, :, :4], second, "COR REFORMAT")
    with pytest.raises(RecokdError) as refused:
        read_image(tmp_path / "dicom")
    message = str(refused.value)
    assert "\n" not in message
    for expected in (first, second, "AX CT", "COR REFORMAT", "--series"):
        assert expected in message
    assert [s.uid for s in dicom_series(tmp_path / "dicom")] == sorted([first, second])
    assert read_image(tmp_path / "dicom", series=second).GetDepth() == 4
    with pytest.raises(RecokdError, match="is not in"):
        read_image(tmp_path / "dicom", series=f"{UID_ROOT}.9")


# ---------------------------------------------------------------- array checks


@pytest.mark.parametrize(
    "shape, channels, message",
    [
        ((8, 8), 1, "2D"),
        ((1, 1, 4, 4, 4), 1, "5 dimensions"),
        ((2, 4, 4, 4), 1, "takes 1 input channel"),
        ((4, 4, 4), 2, "takes 2 input channel"),
        ((0, 4, 4), 1, "empty"),
    ],
)
def test_channels_first_refuses_what_the_model_cannot_take(shape, channels, message):
    with pytest.raises(RecokdError, match=message):
        channels_first(np.zeros(shape, np.float32), channels)


def test_channels_first_adds_the_channel_axis_without_copying():
    array = np.zeros((3, 4, 5), np.int16)
    result = channels_first(array, 1)
    assert result.shape == (1, 3, 4, 5) and np.shares_memory(result, array) and result.dtype == np.int16


def test_nan_and_inf_are_refused_never_replaced():
    array = np.zeros((4, 4, 4), np.float32)
    check_finite(array)
    array[1, 2, 3] = np.inf
    array[0, 0, 0] = np.nan
    with pytest.raises(RecokdError, match="2 of 64 voxels"):
        check_finite(array)
    assert np.isnan(array[0, 0, 0])  # untouched
    with pytest.raises(RecokdError, match="Every voxel"):
        check_finite(np.full((2, 2, 2), np.nan, np.float64))


def test_spacing_is_reversed_to_zyx_and_made_absolute_like_nnunets_reader():
    assert nnunet_spacing((0.5, -0.7, 3.0)) == [3.0, 0.7, 0.5]
    for bad in ((1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(RecokdError, match="spacing"):
            nnunet_spacing(bad)


# ---------------------------------------------------------------- writing


def _labels_image(volume: sitk.Image) -> sitk.Image:
    array = np.zeros(volume.GetSize()[::-1], np.uint8)
    array[1:3, 2:5, 3:7] = 1
    array[4, 5:8, 1:4] = 2
    return labels_like(array, volume)


def test_seg_nrrd_carries_slicer_segment_fields(tmp_path, volume):
    custom = LabelInfo(3, "tumour | core", (0, 255, 0), Terminology("ReCoKD", "T1", "Lesion"),
                       Terminology("ReCoKD", "T2", "Tumour~core"), custom=True)
    path = write_labels(_labels_image(volume), tmp_path / "case.seg.nrrd", [LABELS[1], LABELS[0], custom])
    image = sitk.ReadImage(str(path))
    meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    assert meta["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert meta["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert meta["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    nx, ny, nz = volume.GetSize()
    for i, label in enumerate([LABELS[0], LABELS[1], custom]):  # ordered by label value
        prefix = f"Segment{i}_"
        assert meta[prefix + "ID"] == f"Segment_{label.value}"
        assert meta[prefix + "Name"] == label.name
        assert [float(c) for c in meta[prefix + "Color"].split()] == pytest.approx([c / 255 for c in label.color],
                                                                                  abs=1e-6)
        assert meta[prefix + "LabelValue"] == str(label.value)
        assert meta[prefix + "Layer"] == "0"
        assert meta[prefix + "Extent"] == f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
        assert meta[prefix + "NameAutoGenerated"] == meta[prefix + "ColorAutoGenerated"] == "0"
    liver_tags = meta["Segment0_Tags"]
    assert liver_tags == ("TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list"
                          "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
                          "~Anatomic codes - DICOM master list~^^~^^|")
    assert "~SCT^7771000^Left~" in meta["Segment1_Tags"]
    custom_tags = meta["Segment2_Tags"]
    assert custom_tags.startswith("TerminologyEntry:ReCoKD custom terminology~ReCoKD^T1^Lesion~ReCoKD^T2^Tumour core~")
    assert custom_tags.count("|") == 1 and custom_tags.count("~") == 6
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(_labels_image(volume)))
    np.testing.assert_allclose(image.GetDirection(), volume.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), volume.GetOrigin(), atol=1e-9)


def test_nifti_labels_round_trip_with_geometry(tmp_path, volume):
    labels = _labels_image(volume)
    image = sitk.ReadImage(str(write_labels(labels, tmp_path / "case.nii.gz", LABELS)))
    assert image.GetPixelID() == sitk.sitkUInt8 and image.GetSize() == volume.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels))


def test_existing_output_is_kept_unless_overwrite(tmp_path, volume):
    path = tmp_path / "case.nii.gz"
    path.write_bytes(b"keep me")
    with pytest.raises(RecokdError, match="--overwrite"):
        write_labels(_labels_image(volume), path, LABELS)
    assert path.read_bytes() == b"keep me"
    write_labels(_labels_image(volume), path, LABELS, overwrite=True)
    assert sitk.ReadImage(str(path)).GetSize() == volume.GetSize()


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), CancelledError("stopped by SIGTERM")])
def test_an_interrupted_write_leaves_neither_output_nor_temporary_file(tmp_path, volume, monkeypatch, failure):
    def half_write(image, name, compress):
        Path(name).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(image_io.sitk, "WriteImage", half_write)
    expected = RecokdError if isinstance(failure, RuntimeError) else CancelledError
    with pytest.raises(expected):
        write_labels(_labels_image(volume), tmp_path / "case.seg.nrrd", LABELS)
    assert list(tmp_path.iterdir()) == []

"""Label array + model labels -> segmentation node, prepared off-scene and committed last.

:func:`prepare_segmentation` builds a complete ``vtkMRMLSegmentationNode`` that is *not* in any
scene: one segment per label (name, colour, terminology entry), all sharing one labelmap layer
(the same form Slicer gives a loaded ``.seg.nrrd``), reference geometry = the input volume.
Only :func:`commit_segmentation` touches the scene, so a cancel or a failure before it leaves
the scene exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
from vtk.util import numpy_support

from .geometry import ImageGeometry
from .labels import SegmentLabel
from .volumes import array_from_volume, numpy_to_matrix, read_image, volume_ijk_to_ras

logger = logging.getLogger(__name__)


@dataclass
class PreparedSegmentation:
    """An off-scene segmentation node, the volume it belongs to, and segment IDs by label value."""

    node: slicer.vtkMRMLSegmentationNode
    reference_volume: object | None
    segment_ids: dict[int, str]


def _oriented_labelmap(labels: np.ndarray, ijk_to_ras: np.ndarray) -> slicer.vtkOrientedImageData:
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    slices, rows, columns = labels.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(columns, rows, slices)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(labels, dtype=dtype).ravel(), deep=True))
    image.SetImageToWorldMatrix(numpy_to_matrix(ijk_to_ras))
    return image


def _grid_matrix(label_array: np.ndarray, geometry: ImageGeometry, reference_volume) -> np.ndarray:
    """IJK-to-RAS for the labelmap: the volume's own matrix when the label grid is the volume's
    grid (a NIfTI header keeps it only to float32 precision), else the label file's geometry."""
    if reference_volume is None:
        return geometry.ijk_to_ras()
    volume_array, volume_geometry = array_from_volume(reference_volume)
    if volume_array.shape == label_array.shape and volume_geometry.is_close(geometry):
        return volume_ijk_to_ras(reference_volume)
    logger.warning(
        "Label grid %s differs from the grid of volume '%s' %s; Slicer resamples where needed.",
        label_array.shape, reference_volume.GetName(), volume_array.shape,
    )
    return geometry.ijk_to_ras()


def prepare_segmentation(
    label_array: np.ndarray,
    geometry: ImageGeometry,
    labels: Sequence[SegmentLabel],
    reference_volume=None,
) -> PreparedSegmentation:
    """Build an off-scene segmentation node from a label array (z, y, x) and its LPS geometry.

    Every label gets a segment, also when its value does not occur in the array (an empty
    segment tells the user the structure was not found). Voxel values that are not a label are
    set to background and reported in the log.
    """
    label_array = np.asarray(label_array)
    if label_array.ndim != 3:
        raise ValueError(f"label array must be 3D (z, y, x), got shape {label_array.shape}")
    values = np.array([label.value for label in labels], dtype=np.int64)
    unknown = ~np.isin(label_array, values) & (label_array != 0)
    if unknown.any():
        logger.warning(
            "Label values %s are not among the model's labels; they are left as background.",
            sorted(np.unique(label_array[unknown]).tolist()),
        )
        label_array = np.where(unknown, 0, label_array)
    if (label_array < 0).any():
        raise ValueError("label array has negative values")

    labelmap = _oriented_labelmap(label_array, _grid_matrix(label_array, geometry, reference_volume))
    node = slicer.vtkMRMLSegmentationNode()
    segmentation = node.GetSegmentation()
    binary_labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(binary_labelmap)
    segment_ids = {}
    for label in labels:
        segment = slicer.vtkSegment()
        segment.SetName(label.name)
        segment.SetColor(*label.color_float)
        segment.SetTerminology(label.terminology_entry())
        segment.AddRepresentation(binary_labelmap, labelmap)  # one shared layer for all segments
        segment.SetLabelValue(label.value)
        segmentation.AddSegment(segment)
        segment_ids[label.value] = segmentation.GetSegmentIdBySegment(segment)

    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    else:
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(labelmap),
        )
    return PreparedSegmentation(node, reference_volume, segment_ids)


def prepare_segmentation_from_file(path: Path, labels: Sequence[SegmentLabel], reference_volume=None) -> PreparedSegmentation:
    """:func:`prepare_segmentation` for a label image file (e.g. ``recokd segment``'s ``.nii.gz``)."""
    label_array, geometry = read_image(path)
    if not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"{path}: label image must have integer voxels, got {label_array.dtype}")
    return prepare_segmentation(label_array, geometry, labels, reference_volume)


def _place_next_to(scene, node, reference_node) -> None:
    """Put ``node`` under the same subject hierarchy parent as ``reference_node``."""
    hierarchy = scene.GetSubjectHierarchyNode()
    reference_item = hierarchy.GetItemByDataNode(reference_node) if reference_node is not None else 0
    parent = hierarchy.GetItemParent(reference_item) if reference_item else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def commit_segmentation(prepared: PreparedSegmentation, scene, output_node=None, name: str = "") -> slicer.vtkMRMLSegmentationNode:
    """Put a prepared segmentation into ``scene``: as a new node (named ``name``, placed next to
    the reference volume in the subject hierarchy), or, when ``output_node`` is given, replacing
    that node's segments. Either way it sits under the reference volume's parent transform."""
    reference = prepared.reference_volume
    if output_node is not None:
        if output_node.GetScene() is not scene:
            raise ValueError(f"output segmentation '{output_node.GetName()}' is not in this scene")
        output_node.GetSegmentation().DeepCopy(prepared.node.GetSegmentation())
        node = output_node
    else:
        node = prepared.node
        node.SetName(scene.GenerateUniqueName(name or "Segmentation"))
        scene.AddNode(node)
        try:
            node.CreateDefaultDisplayNodes()
        except Exception:
            scene.RemoveNode(node)
            raise
        _place_next_to(scene, node, reference)
    if reference is not None:
        # The transform first: the reference geometry is the volume's grid mapped through the
        # volume-to-segmentation transform, which is the identity only once both share it.
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    return node


def write_segmentation_file(prepared: PreparedSegmentation, path: Path) -> Path:
    """Write a prepared segmentation as ``.seg.nrrd`` (segment names, colours and terminology kept)."""
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(prepared.node):
        raise OSError(f"could not write segmentation file {path}")
    return Path(path)

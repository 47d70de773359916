"""Volume node <-> voxel array + geometry <-> image file (NRRD / NIfTI through SimpleITK).

The array is indexed (z, y, x); the geometry is in ITK's LPS terms (:class:`ImageGeometry`),
taken from the node's full IJK-to-RAS matrix (oblique directions and anisotropic spacing
included). A parent transform of the node is not applied: results are placed under the same
transform instead (see :func:`.segmentations.commit_segmentation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from .geometry import ImageGeometry


def matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row][column]))
    return matrix


def volume_ijk_to_ras(volume_node) -> np.ndarray:
    """The node's IJK-to-RAS matrix, shifted so that voxel (0, 0, 0) of the array is the first
    voxel of the image extent (extents normally start at 0, then this is the node's matrix)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = matrix_to_numpy(matrix)
    extent = volume_node.GetImageData().GetExtent()
    ijk_to_ras[:, 3] = ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0])
    return ijk_to_ras


def array_from_volume(volume_node) -> tuple[np.ndarray, ImageGeometry]:
    """Voxels (read-only view, indexed z, y, x) and LPS geometry of a scalar volume node."""
    image = volume_node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{volume_node.GetName()}' has no voxel data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"volume '{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel; "
            "choose a scalar (single-component) volume"
        )
    columns, rows, slices = image.GetDimensions()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(slices, rows, columns)
    view = voxels.view()
    view.flags.writeable = False
    return view, ImageGeometry.from_ijk_to_ras(volume_ijk_to_ras(volume_node))


def image_from_array(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def write_volume(volume_node, path: Path, compress: bool = False) -> Path:
    """Write a scalar volume node to ``path`` (``.nrrd`` keeps the geometry in full precision).

    Compression is off by default: the file is a hand-over to a subprocess, not an archive.
    """
    array, geometry = array_from_volume(volume_node)
    path = Path(path)
    sitk.WriteImage(image_from_array(array, geometry), str(path), compress)
    return path


def read_image(path: Path) -> tuple[np.ndarray, ImageGeometry]:
    """Voxels (z, y, x) and LPS geometry of a 3D single-component image file."""
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{path}: expected a 3D single-component image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    geometry = ImageGeometry(
        spacing=tuple(image.GetSpacing()), origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection())
    )
    return sitk.GetArrayFromImage(image), geometry

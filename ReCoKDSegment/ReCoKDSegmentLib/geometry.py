"""Image geometry in ITK terms (LPS) and its conversion to and from Slicer's IJK-to-RAS matrix.

ITK (and SimpleITK, NRRD, NIfTI readers) describe a voxel grid by ``spacing``, ``origin`` and a
3x3 ``direction`` whose columns are the unit vectors of the i, j, k axes, all in LPS
coordinates. Slicer stores one 4x4 IJK-to-RAS matrix. RAS = diag(-1, -1, 1) LPS, so

    IJK-to-RAS = [[F D diag(spacing), F origin], [0 0 0 1]],   F = diag(-1, -1, 1).

Arrays are indexed (k, j, i), i.e. (z, y, x), as ``SimpleITK.GetArrayFromImage`` and
``slicer.util.arrayFromVolume`` return them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid geometry in LPS: spacing (mm, i/j/k), origin (mm) and direction (3x3, columns = axes)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3, as SimpleITK's GetDirection()

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 IJK-to-RAS matrix Slicer uses for this grid."""
        matrix = np.eye(4)
        matrix[:3, :3] = LPS_TO_RAS @ self.direction_matrix @ np.diag(self.spacing)
        matrix[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin, dtype=float)
        return matrix

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray) -> ImageGeometry:
        """Decompose a 4x4 IJK-to-RAS matrix (columns: scaled axis vectors) into ITK terms."""
        matrix = np.asarray(matrix, dtype=float)
        axes = matrix[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"IJK-to-RAS matrix has a zero-length axis: {matrix.tolist()}")
        direction = LPS_TO_RAS @ (axes / spacing)
        origin = LPS_TO_RAS @ matrix[:3, 3]
        return cls(
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in origin),
            direction=tuple(float(d) for d in direction.ravel()),
        )

    def is_close(self, other: ImageGeometry, tolerance_mm: float = 1e-4, tolerance_direction: float = 1e-5) -> bool:
        """Same grid up to the precision a NIfTI header keeps (float32)."""
        return (
            np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance_direction)
        )

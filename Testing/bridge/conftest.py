"""Bridge tests: the Slicer module's Lib on real MRML classes (the ``slicer-core`` wheel),
real subprocesses, no Slicer application and no Qt.

Modules that need MRML call ``pytest.importorskip("slicer", ...)`` first, so they skip with a
reason where the wheel does not exist (it is built for Linux x86_64 only). Shared data and
constants are in ``bridge_support.py``.
"""

from __future__ import annotations

import sys

import pytest
from bridge_support import OBLIQUE_IJK_TO_RAS, SLICER_CORE_MISSING, STANDIN, phantom_voxels


@pytest.fixture
def scene():
    """A fresh MRML scene with the segmentations and subject hierarchy logics attached, set as
    ``slicer.mrmlScene`` the way the Slicer application provides it."""
    slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
    mrml_scene = slicer.vtkMRMLScene()
    logics = [slicer.vtkSlicerSegmentationsModuleLogic(), slicer.vtkSlicerSubjectHierarchyModuleLogic()]
    for logic in logics:
        logic.SetMRMLScene(mrml_scene)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = mrml_scene
    yield mrml_scene
    slicer.mrmlScene = previous


@pytest.fixture
def oblique_volume(scene):
    """A scalar volume node in ``scene`` on the oblique grid, holding ``phantom_voxels()``."""
    import slicer
    import vtk
    from ReCoKDSegmentLib.volumes import numpy_to_matrix
    from vtk.util import numpy_support

    voxels = phantom_voxels()
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels.ravel(), deep=True))
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName("Phantom")
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(numpy_to_matrix(OBLIQUE_IJK_TO_RAS))
    scene.AddNode(node)
    return node


@pytest.fixture
def standin_launcher() -> list[str]:
    """Launcher for the protocol stand-in (see ``recokd_protocol_standin.py``)."""
    return [sys.executable, str(STANDIN)]

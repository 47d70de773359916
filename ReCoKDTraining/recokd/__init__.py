"""ReCo-KD: knowledge distillation of nnU-Net v2 teachers into small, fast students.

The package never imports Slicer or Qt; the 3D Slicer module (``ReCoKDSegment``) runs it
in a subprocess or imports it for console batch work.
"""

__version__ = "0.1.0"

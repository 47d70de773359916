"""What the ReCoKDSegment module does without a GUI, testable on the ``slicer-core`` wheel.

* :mod:`.geometry` - image geometry in ITK (LPS) terms and its IJK-to-RAS matrix;
* :mod:`.volumes` - volume node -> array + geometry -> image file, and image file -> array;
* :mod:`.segmentations` - label array + model labels -> segmentation node, prepared off-scene;
* :mod:`.terminology` - the model's custom structures made known to Slicer's terminologies;
* :mod:`.compatibility` - the Slicer and Python version floor, checked before the rest loads;
* :mod:`.runner` - the background-process state machine that parses ``--progress json`` lines;
* :mod:`.commands` - ``recokd`` command lines built from plain parameter objects;
* :mod:`.dependencies` - pip command and constraints that keep Slicer's own packages;
* :mod:`.jobs` - the steps of "segment this volume" and "segment these files".

Imports here are limited to ``slicer``/``vtk`` MRML classes, numpy, SimpleITK and the
standard library: no Qt, no ``recokd``, no torch.
"""

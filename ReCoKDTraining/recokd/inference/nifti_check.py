"""Bad voxel data in a NIfTI file that ITK's reader would hide.

ITK's NIfTI reader silently turns two kinds of bad data into zeros: voxels missing from a
truncated file, and NaN or infinite floating-point voxels. Segmenting those zeros gives a
plausible-looking, wrong result. So before SimpleITK reads a NIfTI file, one streaming pass
(decompressing on the fly, which also checks gzip's CRC) measures the voxel data the header
announces and counts non-finite values. Memory use is one chunk; NRRD and MetaImage readers
report truncation themselves and keep NaN, so they need no such pass.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from recokd.inference.validation import non_finite_problem

_CHUNK = 1 << 22
_FLOAT_CODES = {16: "f4", 64: "f8"}  # NIfTI datatype codes FLOAT32 and FLOAT64
_AGAIN = "Copy or export the file again."


@dataclass(frozen=True)
class _Layout:
    """Where the voxels are: byte ``offset``, ``nbytes`` long; ``dtype`` only for floating-point data."""

    offset: int
    nbytes: int
    dtype: np.dtype | None


def _layout(header: bytes) -> _Layout | None:
    """The voxel layout a NIfTI-1 or NIfTI-2 header (either byte order) announces, or None if it is not one."""
    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 0 < dims[0] <= 7:
            return None
        voxels = math.prod(max(int(d), 0) for d in dims[1 : dims[0] + 1])
        code = _FLOAT_CODES.get(datatype)
        return _Layout(max(offset, size), voxels * bitpix // 8, np.dtype(order + code) if code else None)
    return None


def nifti_problem(path: Path) -> str | None:
    """Why the NIfTI file at ``path`` must not be segmented as ITK would read it, or None."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
            layout = _layout(header)
            if layout is None:
                return None  # not a NIfTI header: SimpleITK's reader says what is wrong
            received, bad = _scan(stream, header, layout)
    except (OSError, EOFError, zlib.error) as error:
        return f"the compressed data is damaged or cut short ({error}). {_AGAIN}"
    if received < layout.nbytes:
        return f"the file is truncated: it holds {received:,} of the {layout.nbytes:,} voxel bytes its header announces. {_AGAIN}"
    return non_finite_problem(bad, layout.nbytes // layout.dtype.itemsize) if layout.dtype is not None else None


def _scan(stream: BinaryIO, header: bytes, layout: _Layout) -> tuple[int, int]:
    """Voxel bytes present in the file, and how many floating-point voxels among them are not finite."""
    position = received = bad = 0
    pending = b""
    chunk = header
    while chunk:
        start, position = position, position + len(chunk)
        low, high = max(start, layout.offset), min(position, layout.offset + layout.nbytes)
        if high > low:
            received += high - low
            if layout.dtype is not None:
                pending += chunk[low - start : high - start]
                usable = len(pending) - len(pending) % layout.dtype.itemsize
                values = np.frombuffer(pending, dtype=layout.dtype, count=usable // layout.dtype.itemsize)
                bad += values.size - int(np.count_nonzero(np.isfinite(values)))
                pending = pending[usable:]
        chunk = stream.read(_CHUNK)
    return received, bad

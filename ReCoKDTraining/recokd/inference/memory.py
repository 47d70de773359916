"""Peak resident memory of this process, as the operating system counts it."""

from __future__ import annotations

import sys


def peak_rss_bytes() -> int | None:
    """The high-water mark of this process's resident set size, or None where the OS does not say.

    A high-water mark only grows: after several volumes it is the peak over all of them so far.
    Linux reports kilobytes, macOS bytes; Windows has no ``resource`` module and reports the
    peak working set through psutil instead.
    """
    try:
        import resource
    except ImportError:
        import psutil

        return getattr(psutil.Process().memory_info(), "peak_wset", None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024

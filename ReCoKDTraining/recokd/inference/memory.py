"""Resident memory of this process (now, and its peak), as the operating system counts it."""

from __future__ import annotations

import sys
from pathlib import Path

_LINUX_STATUS = Path("/proc/self/status")


def _linux_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or None off Linux."""
    if _LINUX_STATUS.is_file():
        for line in _LINUX_STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def current_rss_bytes() -> int | None:
    """This process's resident set size now (``VmRSS`` on Linux, psutil elsewhere when installed), or None."""
    current = _linux_status_bytes("VmRSS")
    if current is not None:
        return current
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """The high-water mark of this process's own resident set size, or None where the OS does not say.

    A high-water mark only grows: after several volumes it is the peak over all of them so far.
    On Linux ``VmHWM`` is read from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` carries
    a parent's high-water mark into a forked-and-executed child, so a probe started by a 1.5 GB
    benchmark would report at least 1.5 GB. macOS reports ``ru_maxrss`` in bytes; Windows has
    no ``resource`` module and reports the peak working set through psutil.
    """
    peak = _linux_status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:
        import psutil

        return getattr(psutil.Process().memory_info(), "peak_wset", None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024

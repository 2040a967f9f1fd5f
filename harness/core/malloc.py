"""Large allocations straight from the kernel (glibc ``M_MMAP_THRESHOLD``), so freed tensors give memory back.

Why: glibc raises its mmap threshold dynamically up to 32 MB after the first
large block is freed; from then on the [rows, V] and [directions, V] tensors
of a real-vocabulary study (16–30 MB each at V = 151,936) come from the heap,
which fragments and never shrinks. Measured on the geometry sweep at
V = 151,936, 12 positions: peak RSS 892 MB and climbing with the default,
593 MB and flat with the threshold fixed at 1 MiB (the study's peak grew to
3.6 GB over 64 positions). Fixing the threshold also turns off the dynamic
adjustment. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(nbytes: int = THRESHOLD_BYTES) -> bool:
    """Serve allocations of ``nbytes`` or more by mmap for the rest of the process; True when glibc accepted it."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))

"""Third-party warnings shown once and counted: a library that warns per call must not bury the run's output.

bitsandbytes logs "MatMul8bitLt: inputs will be cast from torch.bfloat16 to float16 during quantization" on every
int8 matrix product (55,440 lines in one teacher-forced drift pass; issue 30). Inside :func:`once_each`, each
distinct warning (``warnings`` category + message, or a log record's logger + message template) passes the first
time; the repeats are dropped and counted, and the counts come back to the caller to record.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Iterator


class _Once(logging.Filter):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name.split(".")[0] == "harness":
            return True  # errors are never deduplicated, nor the harness's own progress lines (third parties only)
        key = f"{record.name}: {record.msg}"
        if not getattr(record, "_stabprobe_counted", False):  # one record reaches every handler: count it once
            record._stabprobe_counted = True
            self.counts[key] += 1
            record._stabprobe_first = self.counts[key] == 1
        return record._stabprobe_first


@contextmanager
def once_each() -> Iterator[Counter]:
    """Inside: every distinct third-party warning or log record is shown once; yields the Counter of all of them."""
    counts: Counter = Counter()
    f = _Once(counts)
    handlers = list(logging.getLogger().handlers) + ([logging.lastResort] if logging.lastResort else [])
    for h in handlers:
        h.addFilter(f)
    seen_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        key = f"{category.__name__}: {message}"
        counts[key] += 1
        if counts[key] == 1:
            seen_show(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # counted here instead of the default once-per-location
            warnings.showwarning = show
            yield counts
    finally:
        for h in handlers:
            h.removeFilter(f)


def repeated(counts: Counter) -> str:
    """One line for a note: the warnings that repeated, with their counts ("" when none did)."""
    rep = [(k, n) for k, n in counts.most_common() if n > 1]
    return "; ".join(f"{n} x {k[:100]}" for k, n in rep[:3]) + (f"; and {len(rep) - 3} more" if len(rep) > 3 else "")

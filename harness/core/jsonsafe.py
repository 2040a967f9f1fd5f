"""Python objects as JSON can hold them: the one sanitiser of the project.

JSON has neither NaN nor infinity (``json.dumps`` writes the non-standard
``NaN``, which strict readers refuse), and numpy scalars, arrays, tuples and
paths are not JSON types. :func:`json_safe` turns a study summary into plain
JSON with NaN/inf as null; :func:`json_default` is the ``default=`` hook of
:func:`harness.core.rundir.atomic_write_json` (types only: a value is never
changed there, so a run's summary.json keeps what it has always written).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def json_safe(o: Any) -> Any:
    """NaN/inf become null; numpy scalars and arrays become Python numbers and lists; keys become strings."""
    import numpy as np

    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: numpy types, sets, tuples and paths; anything else is a TypeError."""
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")

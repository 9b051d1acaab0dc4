"""JSON as ``see`` writes it: strict, so that any parser reads it."""
from __future__ import annotations

import json
import math
from typing import Any


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """JSON that every parser reads. ``json.dumps`` writes NaN and Infinity, which are not JSON; a figure that
    could not be measured (a rate over zero queries) is written as null instead. A non-finite loss never gets
    here: training stops on it (see ``see.experts.training``)."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)

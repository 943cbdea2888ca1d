"""The random-init fallback of ``compare`` and ``rank`` (``fallback_random``): when a backbone's pretrained
weights cannot be had, its entry goes on from a random init, with a warning, instead of failing.

A local weights file that is missing or does not fit is never replaced: the user named that file.
"""

from __future__ import annotations

from typing import Callable

from ..backbones.weights import RANDOM_INIT, is_local_path
from ..errors import WeightsError


def falls_back(weights: str | None, exc: WeightsError, *, allowed: bool, say: Callable[[str], None],
               who: str, going_on: str) -> bool:
    """True when an entry whose ``weights`` failed with ``exc`` goes on from random init (``allowed`` and the
    weights are pretrained ones, not a local file); it then ``say``s the warning, ``who`` first and
    ``going_on`` (``"running"``, ``"ranking it"``) naming what continues."""
    if not (allowed and weights is not None and not is_local_path(weights)):
        return False
    say(f"{who}: WARNING pretrained weights unavailable — {going_on} from {RANDOM_INIT} instead ({exc})")
    return True

"""Detection power: the rarest leak a run would have seen, from how much it checked.

A run that scanned n payloads and found no leak has not proven "no leak": a leak hitting one
payload in a million would most likely have slipped past. If each payload leaks
independently with probability p, all n come back clean with probability (1 - p)^n; the
smallest p the run would have caught with `confidence` solves (1 - p)^n = 1 - confidence:

    p = 1 - (1 - confidence)^(1/n)      (about 3/n at 95 %, the "rule of three")

So "0 leaks in 20,000 frames" reads "a leak in 1 of 6,700 frames would have been seen with
95 % probability", and a run too small to see a rare leak says so instead of passing.
"""

from __future__ import annotations

import math
from typing import Final

CONFIDENCE: Final = 0.95


def detectable_rate(checked: int, confidence: float = CONFIDENCE) -> float:
    """The smallest per-payload leak rate `checked` clean payloads rule out (NaN for none)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if checked <= 0:
        return math.nan
    return -math.expm1(math.log1p(-confidence) / checked)


def one_in(rate: float) -> int:
    """`rate` as "1 in N" (N rounded down; 0 when there is no rate)."""
    if math.isnan(rate) or rate <= 0:
        return 0
    return math.floor(1 / rate)


def describe(checked: int, confidence: float = CONFIDENCE) -> str:
    """``"a leak in 1 of 6,676 payloads would have been seen with 95 % probability"``."""
    rate = detectable_rate(checked, confidence)
    if math.isnan(rate):
        return "nothing was checked, so no leak rate is ruled out"
    return (
        f"{checked:,} payloads checked: a leak in 1 of {one_in(rate):,} would have been seen "
        f"with {confidence:.0%} probability"
    )

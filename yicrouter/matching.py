"""Re-applying a C-FIND's matching keys to every peer's matches.

STUB: the interface is fixed, the bodies are placeholders to be filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class MatchRules:
    """Network-wide matching choices that PS3.4 C.2.2.2 leaves to the SCP."""

    patient_name_case_sensitive: bool = False
    # Whether the requester negotiated combined date and time range matching.
    combined_datetime: bool = False


def is_true_match(keys: Dataset, match: Dataset, rules: MatchRules) -> bool:
    """Return True when `match` satisfies every matching key in `keys` (PS3.4 C.2.2.2)."""
    return True

"""Specific Character Set handling between workstations and peers.

STUB: the interface is fixed, the bodies are placeholders to be filled in.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from yicrouter.config import PeerSettings


def encode_request(peer: PeerSettings, identifier: Dataset) -> Dataset:
    """Return a copy of a C-FIND identifier in a form that `peer` can match.

    `identifier` holds decoded str values and its (0008,0005) states the
    workstation's character set.
    """
    return identifier


def decode_match(peer: PeerSettings, match: Dataset) -> Dataset:
    """Return `match` with every text value decoded, using the declared or default charset."""
    return match


def encode_response(response: Dataset, request_charset: list[str]) -> Dataset:
    """Return `response` with (0008,0005) stating the character set its values need."""
    return response

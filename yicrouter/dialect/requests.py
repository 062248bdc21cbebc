"""The C-FIND requests that one peer gets, and the plan that groups them."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from yicrouter.config import PeerSettings
from yicrouter.query import InformationModel


@dataclass(frozen=True)
class PeerRequest:
    """One C-FIND that a peer gets: its information model, level and identifier."""

    model: InformationModel
    level: str
    identifier: Dataset
    # Times this request was halved by date range.
    split_depth: int = 0
    # Whether to propose combined date-time matching to the peer (PS3.4 C.5.1.1).
    combined_datetime: bool = False
    # When set, that query runs first and this request is sent once for each
    # of its matches, with the parent UIDs copied from the match.
    parents_from: "PeerRequest | None" = None
    # Keywords copied from each match of parents_from into `inherited`.
    inherit_keys: tuple[str, ...] = ()
    # Keys of the parent entity that each match of this request gets when it lacks them.
    inherited: Dataset | None = None


@dataclass(frozen=True)
class PeerPlan:
    """All C-FINDs that one peer gets for one workstation C-FIND."""

    peer: PeerSettings
    requests: tuple[PeerRequest, ...]
    # The workstation's Query/Retrieve Level, when the peer is asked at a
    # lower one (a PATIENT query to a Study Root only peer).
    collapse_to: str | None = None
    # Queries at the levels above, for keys of those levels that the peer
    # can't match at the Query/Retrieve Level. Each must return a match, or
    # the peer has nothing that the workstation requested.
    preconditions: tuple[PeerRequest, ...] = ()
    # Keys of the levels above that are copied from the preconditions' matches into each match.
    inherited_keys: tuple[str, ...] = ()
    # Keys that a STUDY match lacking them gets from a SERIES-level query of
    # the study at the same peer (see derivation_request).
    derive_keys: tuple[str, ...] = ()

    @property
    def models(self) -> list[InformationModel]:
        """Return every information model that the plan's requests use."""
        found: list[InformationModel] = []
        pending = [*self.requests, *self.preconditions]
        while pending:
            request = pending.pop()
            if request.model not in found:
                found.append(request.model)
            if request.parents_from is not None:
                pending.append(request.parents_from)
        return found

    @property
    def combined_datetime(self) -> bool:
        return any(request.combined_datetime for request in self.requests)


@dataclass
class Draft:
    """A request being rewritten for one peer."""

    model: InformationModel
    level: str
    identifier: Dataset

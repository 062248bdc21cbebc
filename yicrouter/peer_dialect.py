"""Per-peer C-FIND and retrieve identifiers: the peer's quirk options applied to a checked Query.

`plan_find` turns one workstation C-FIND into the C-FIND requests that one
peer gets. `retrieve_request` does the same for a C-MOVE or C-GET identifier.
The router re-applies the workstation's own keys to every match afterwards
(yicrouter.matching), so a request here may ask a peer for more than the
workstation asked for, never for less.

A relational query (PS3.4 C.4.1.2.2) from a workstation that negotiated it
goes to a peer as is, unless the peer has needs_parent_uids or a key of a
level above takes part in matching. Then a query one level up runs first,
and the request is sent once per parent match with its parent UIDs.
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from yicrouter import charsets, routing
from yicrouter.config import PeerSettings
from yicrouter.matching import is_matching_key, is_universal
from yicrouter.query import LEVELS, UNIQUE_KEYS, InformationModel, Query, split_values

# PS3.4 C.2.2.2.4: wild card matching applies to these VRs only.
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# PS3.4 C.2.2.2.5: range matching applies to these VRs only.
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})

# Maximum number of times one request is halved by date range for a peer with
# max_matches, so one workstation C-FIND costs a peer at most 2**6 requests.
MAX_SPLIT_DEPTH: Final = 6

# Keys that never take part in matching and are never sent as "*".
_CONTROL_KEYWORDS: Final = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})

# The level that each key belongs to in the Patient Root model (PS3.4 tables
# C.6-1 to C.6-4). In the Study Root model the patient keys are STUDY keys
# (table C.6-5). A key not listed here is taken to belong to the
# Query/Retrieve Level of the request, so it is sent to the peer unchanged.
_PATIENT_KEYS: Final = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "OtherPatientNames", "EthnicGroup", "PatientComments", "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
})
_STUDY_KEYS: Final = frozenset({
    "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyID",
    "StudyInstanceUID", "ReferringPhysicianName", "StudyDescription", "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription", "PatientAge", "PatientSize",
    "PatientWeight", "Occupation", "AdditionalPatientHistory", "OtherStudyNumbers",
    "ModalitiesInStudy", "SOPClassesInStudy", "AnatomicRegionsInStudyCodeSequence",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
})
_SERIES_KEYS: Final = frozenset({
    "Modality", "SeriesNumber", "SeriesInstanceUID", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "Laterality", "ProtocolName", "OperatorsName",
    "PerformingPhysicianName", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence",
    "NumberOfSeriesRelatedInstances",
})

# Date and time keys matched together under combined date-time matching (PS3.4 C.2.2.2.5).
_DATE_TIME_PAIRS: Final = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    ("ContentDate", "ContentTime"),
    ("AcquisitionDate", "AcquisitionTime"),
)

_CLOSED_DATE_RANGE: Final = re.compile(r"^(\d{8})-(\d{8})$")


class RetrieveNotTranslatable(ValueError):
    """Raised when a retrieve can't be expressed in the information model a peer offers."""


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
class _Draft:
    """A request being rewritten for one peer."""

    model: InformationModel
    level: str
    identifier: Dataset


def key_level(model: InformationModel, keyword: str, query_level: str) -> str:
    """Return the Query/Retrieve Level that a key belongs to in `model`."""
    if keyword in _PATIENT_KEYS:
        return "PATIENT" if model is InformationModel.PATIENT_ROOT else "STUDY"
    if keyword in _STUDY_KEYS:
        return "STUDY"
    if keyword in _SERIES_KEYS:
        return "SERIES"
    if keyword == "SOPInstanceUID":
        return "IMAGE"
    return query_level


# --- C-FIND plans -----------------------------------------------------------------


def plan_find(
    peer: PeerSettings, query: Query, identifier: Dataset, combined_datetime: bool = False
) -> PeerPlan:
    """Build the C-FIND requests that `peer` gets for `query`.

    `identifier` is the workstation's identifier with the unique keys the
    router needs added (see scp.find.upstream_identifier). `combined_datetime`
    is whether the workstation negotiated combined date-time matching.
    """
    draft = _Draft(query.model, query.level, deepcopy(identifier))
    collapse_to = _translate_to_study_root(draft) if peer.study_root_only else None
    derive_keys = derived_keys_for(query) if collapse_to is None else ()
    if peer.needs_parent_uids and _lacks_parent_uid(draft):
        _translate_relational_to_study_root(draft)
    if _lacks_parent_uid(draft):
        requests = _relational_requests(peer, draft, combined_datetime)
        return PeerPlan(peer=peer, requests=tuple(requests), collapse_to=collapse_to, derive_keys=derive_keys)
    upper = _split_off_upper_keys(draft)
    preconditions = tuple(
        _finish(peer, precondition, combined_datetime)[0] for precondition in _preconditions(draft, upper)
    )
    requests = _finish(peer, draft, combined_datetime)
    return PeerPlan(
        peer=peer,
        requests=tuple(requests),
        collapse_to=collapse_to,
        preconditions=preconditions,
        inherited_keys=tuple(keyword for keyword in upper if keyword not in _CONTROL_KEYWORDS),
        derive_keys=derive_keys,
    )


def _finish(peer: PeerSettings, draft: _Draft, combined_datetime: bool) -> list[PeerRequest]:
    """Apply the key-level options to a draft and split it into one request per modality."""
    identifier = draft.identifier
    peer_combines = combined_datetime and peer.combined_datetime
    if combined_datetime and not peer.combined_datetime:
        _drop_times_beside_date_ranges(identifier)
    if not peer.date_ranges:
        _empty_range_keys(identifier)
    if not peer.universal_matching:
        _fill_universal_keys(identifier)
    identifier.QueryRetrieveLevel = draft.level
    requests = []
    for variant in _modality_variants(identifier):
        variant = charsets.encode_request(peer, variant)
        requests.append(PeerRequest(draft.model, draft.level, variant, combined_datetime=peer_combines))
    return requests


def _translate_to_study_root(draft: _Draft) -> str | None:
    """Rewrite a Patient Root draft in the Study Root model.

    A PATIENT-level query becomes a STUDY-level query with the same patient
    keys, and the matches are collapsed back to one per patient (the
    duplicate check of scp.find). The patient-related counts can't be
    collected from study matches, so they are not sent and come back empty.
    Returns the workstation's level when the matches need collapsing.
    """
    if draft.model is InformationModel.STUDY_ROOT:
        return None
    draft.model = InformationModel.STUDY_ROOT
    if draft.level != "PATIENT":
        return None
    draft.level = "STUDY"
    for keyword in ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                    "NumberOfPatientRelatedInstances"):
        if keyword in draft.identifier:
            del draft.identifier[keyword]
    if "StudyInstanceUID" not in draft.identifier:
        draft.identifier.StudyInstanceUID = ""
    return "PATIENT"


def _split_off_upper_keys(draft: _Draft) -> dict[str, DataElement]:
    """Remove the keys of levels above the draft's level, except the unique keys.

    Baseline hierarchical C-FIND allows only the unique keys of the levels
    above (PS3.4 C.4.1.2.1), and peers without relational support treat the
    others in different ways. Returns the removed keys with their values.
    """
    levels = draft.model.levels
    above = set(levels[: levels.index(draft.level)])
    parent_unique = {UNIQUE_KEYS[level] for level in above}
    removed: dict[str, DataElement] = {}
    for element in list(draft.identifier):
        keyword = element.keyword
        if not keyword or keyword in _CONTROL_KEYWORDS or keyword in parent_unique:
            continue
        if key_level(draft.model, keyword, draft.level) in above:
            removed[keyword] = element
            del draft.identifier[keyword]
    return removed


def _preconditions(draft: _Draft, upper: dict[str, DataElement]) -> list[_Draft]:
    """Build one hierarchical query per level above that has keys for the peer to match or return."""
    levels = draft.model.levels
    drafts = []
    for level in levels[: levels.index(draft.level)]:
        keywords = [k for k in upper if key_level(draft.model, k, draft.level) == level]
        if not keywords:
            continue
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for parent in levels[: levels.index(level) + 1]:
            keyword = UNIQUE_KEYS[parent]
            if keyword in draft.identifier:
                identifier[keyword] = deepcopy(draft.identifier[keyword])
            else:
                setattr(identifier, keyword, "")
        for keyword in keywords:
            identifier[keyword] = deepcopy(upper[keyword])
        drafts.append(_Draft(draft.model, level, identifier))
    return drafts


def _drop_times_beside_date_ranges(identifier: Dataset) -> None:
    """Empty each time key whose date key is a range, for a peer that can't combine them.

    Under combined date-time matching the date and time ranges form one
    range (PS3.4 C.2.2.2.5). For StudyDate 20240101-20240102 with StudyTime
    080000-120000, a peer that matches them independently misses a study at
    15:00 on 20240101. So the peer gets the date range alone, and the router
    applies the combined rule to the matches.
    """
    for date_keyword, time_keyword in _DATE_TIME_PAIRS:
        if date_keyword not in identifier or time_keyword not in identifier:
            continue
        date_value = str(identifier[date_keyword].value or "")
        if "-" in date_value and split_values(identifier[time_keyword].value):
            identifier[time_keyword].value = ""


def _empty_range_keys(identifier: Dataset) -> None:
    """Empty DA, TM and DT keys that hold a range or a wild card; they stay return keys."""
    for element in identifier:
        if element.VR not in RANGE_VRS:
            continue
        value = str(element.value or "")
        if any(mark in value for mark in ("-", "*", "?")):
            element.value = ""


def _fill_universal_keys(identifier: Dataset) -> None:
    """Send "*" for each universal key whose VR allows wild card matching (PS3.4 C.2.2.2.4)."""
    for element in identifier:
        if element.keyword in _CONTROL_KEYWORDS or element.VR not in WILDCARD_VRS:
            continue
        if not split_values(element.value):
            element.value = "*"


def _modality_variants(identifier: Dataset) -> list[Dataset]:
    """Return one identifier per ModalitiesInStudy value.

    Peers treat a multi-valued ModalitiesInStudy key differently (as "any
    of", as "all of", or as one literal value), so each peer gets one query
    per value and the matches are de-duplicated by the caller.
    """
    if "ModalitiesInStudy" not in identifier:
        return [identifier]
    values = split_values(identifier.ModalitiesInStudy)
    if len(values) < 2:
        return [identifier]
    variants = []
    for value in dict.fromkeys(values):
        variant = deepcopy(identifier)
        variant.ModalitiesInStudy = value
        variants.append(variant)
    return variants


# --- Relational queries and parent UIDs ---------------------------------------------


def _parent_unique_keywords(model: InformationModel, level: str) -> list[str]:
    levels = model.levels
    return [UNIQUE_KEYS[parent] for parent in levels[: levels.index(level)]]


def _lacks_parent_uid(draft: _Draft) -> bool:
    """Return True when a unique key above the draft's level lacks exactly one value (a relational query)."""
    return any(
        len(split_values(draft.identifier.get(keyword, ""))) != 1
        for keyword in _parent_unique_keywords(draft.model, draft.level)
    )


def _translate_relational_to_study_root(draft: _Draft) -> None:
    """Move a Patient Root draft without one PatientID to the Study Root model.

    The routing table records no PatientID to fill in, and a hierarchical
    Patient Root query of every patient first would cost one more level of
    queries. In the Study Root model PatientID is a STUDY key, so it is
    matched at that level and returned from there.
    """
    if draft.model is InformationModel.PATIENT_ROOT and draft.level != "PATIENT":
        if len(split_values(draft.identifier.get("PatientID", ""))) != 1:
            draft.model = InformationModel.STUDY_ROOT


def _relational_requests(peer: PeerSettings, draft: _Draft, combined_datetime: bool) -> list[PeerRequest]:
    """Build the requests for a draft whose parent unique keys are absent, universal or lists.

    A peer without needs_parent_uids gets the request at its own level when
    no key of a level above takes part in matching. Otherwise the query one
    level up runs first, with those keys, and the request is sent once for
    each of its matches with that match's UIDs. Each match then gets the
    parent match's keys, so the router can re-match them against the
    workstation's keys.
    """
    if peer.needs_parent_uids:
        _fill_from_routing_table(peer, draft.identifier, _uid_parent_levels(draft.level))
    upper = _split_off_upper_keys(draft)
    missing = peer.needs_parent_uids and _lacks_parent_uid(draft)
    constrained = any(is_matching_key(element) and not is_universal(element) for element in upper.values())
    if not missing and not constrained:
        return _finish(peer, draft, combined_datetime)
    parent_draft = _parent_draft(draft, upper)
    inherit_keys = tuple(dict.fromkeys([
        *(keyword for keyword in upper if keyword not in _CONTROL_KEYWORDS),
        *_parent_unique_keywords(draft.model, draft.level),
    ]))
    parent = _single_parent_request(peer, parent_draft, combined_datetime)
    return [
        replace(request, parents_from=parent, inherit_keys=inherit_keys)
        for request in _finish(peer, draft, combined_datetime)
    ]


def _uid_parent_levels(level: str) -> list[str]:
    return [parent for parent in ("STUDY", "SERIES") if LEVELS.index(parent) < LEVELS.index(level)]


def _parent_draft(draft: _Draft, upper: dict[str, DataElement]) -> _Draft:
    """Build the query one level above `draft`, with the parent unique keys and the upper keys."""
    levels = draft.model.levels
    level = levels[levels.index(draft.level) - 1]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for parent in levels[: levels.index(level) + 1]:
        keyword = UNIQUE_KEYS[parent]
        if keyword in draft.identifier:
            identifier[keyword] = deepcopy(draft.identifier[keyword])
        else:
            setattr(identifier, keyword, "")
    for keyword, element in upper.items():
        if keyword not in _CONTROL_KEYWORDS:
            identifier[keyword] = deepcopy(element)
    if len(split_values(identifier.get("ModalitiesInStudy", ""))) > 1:
        # A parent query is one request, so a list of modalities can't be
        # split per value as for a STUDY query. It becomes a return key, and
        # the router matches the value that the children inherit.
        identifier.ModalitiesInStudy = ""
    return _Draft(draft.model, level, identifier)


def _single_parent_request(peer: PeerSettings, draft: _Draft, combined_datetime: bool) -> PeerRequest:
    requests = _relational_requests(peer, draft, combined_datetime)
    assert len(requests) == 1, "a parent draft has at most one ModalitiesInStudy value"
    return requests[0]


def _fill_from_routing_table(peer: PeerSettings, identifier: Dataset, parents: list[str]) -> None:
    """Fill each parent UID that lacks exactly one value from the routing table's record of this peer."""
    known = routing.parent_uids(
        peer.name,
        series_uid=_single_value(identifier, "SeriesInstanceUID"),
        sop_instance_uid=_single_value(identifier, "SOPInstanceUID"),
    )
    for level in parents:
        keyword = UNIQUE_KEYS[level]
        value = known.get(keyword, "")
        if value and len(split_values(identifier.get(keyword, ""))) != 1:
            setattr(identifier, keyword, value)


def _single_value(identifier: Dataset, keyword: str) -> str:
    values = split_values(identifier.get(keyword, ""))
    return values[0] if len(values) == 1 else ""


def with_parent_uids(request: PeerRequest, parent_match: Dataset) -> PeerRequest | None:
    """Return `request` for one match of its parents_from query.

    The request gets the match's parent UIDs where it lacks exactly one
    value, and the match's inherit_keys as `inherited`. Returns None when
    the match lacks a UID, since the request can't be sent then.
    """
    identifier = deepcopy(request.identifier)
    for keyword in _parent_unique_keywords(request.model, request.level):
        if len(split_values(identifier.get(keyword, ""))) == 1:
            continue
        value = _single_value(parent_match, keyword)
        if not value:
            return None
        setattr(identifier, keyword, value)
    inherited = Dataset()
    for keyword in request.inherit_keys:
        if keyword in parent_match:
            inherited[keyword] = deepcopy(parent_match[keyword])
    return replace(request, identifier=identifier, parents_from=None, inherited=inherited)


def apply_inherited(request: PeerRequest, match: Dataset) -> Dataset:
    """Copy the parent entity's keys that `match` lacks into it, and return it."""
    if request.inherited is None:
        return match
    for element in request.inherited:
        if element.tag not in match:
            match.add(deepcopy(element))
    return match


def parent_identity(request: PeerRequest, match: Dataset) -> tuple[str, ...]:
    """Return the UIDs that identify a match of a parent query, for de-duplication."""
    levels = request.model.levels
    return tuple(
        str(match.get(UNIQUE_KEYS[level], "") or "").strip()
        for level in levels[: levels.index(request.level) + 1]
    )


# --- Study keys derived from the study's series ------------------------------------

# STUDY keys that the router can derive from the study's series and
# instances at the same peer, and the SERIES or IMAGE key that each comes from.
DERIVABLE_STUDY_KEYS: Final = {"ModalitiesInStudy": "Modality", "SOPClassesInStudy": "SOPClassUID"}


def derived_keys_for(query: Query) -> tuple[str, ...]:
    """Return the derivable keys of a STUDY query that constrains at least one of them.

    Every derivable key that the query requests is returned, as a matching
    or as a return key, since one SERIES query serves them all. A query
    that requests them only as return keys gets none derived.
    """
    if query.level != "STUDY":
        return ()
    requested = [keyword for keyword in DERIVABLE_STUDY_KEYS if keyword in query.identifier]
    if not any(not is_universal(query.identifier[keyword]) for keyword in requested):
        return ()
    return tuple(requested)


def needs_derivation(plan: PeerPlan, match: Dataset) -> bool:
    """Return True when a STUDY match lacks a key of plan.derive_keys or has it empty.

    An empty value is derived as well: PS3.4 makes it an unknown value,
    which fails every non-universal key, but a peer that does not compute
    the key returns it so.
    """
    return any(not split_values(match.get(keyword, "")) for keyword in plan.derive_keys)


def derivation_request(plan: PeerPlan, study_match: Dataset, level: str, series_uid: str = "") -> PeerRequest | None:
    """Return the SERIES query of a study's series, or the IMAGE query of one series.

    The request uses the model of the plan's first request, with the parent
    UIDs from `study_match`. Returns None when the match lacks one of them.
    """
    model = plan.requests[0].model
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for parent in model.levels[: model.levels.index("STUDY") + 1]:
        keyword = UNIQUE_KEYS[parent]
        value = _single_value(study_match, keyword)
        if not value:
            return None
        setattr(identifier, keyword, value)
    identifier.SeriesInstanceUID = series_uid
    if level == "SERIES":
        identifier.Modality = ""
    if "SOPClassesInStudy" in plan.derive_keys:
        identifier.SOPClassUID = ""
    if level == "IMAGE":
        identifier.SOPInstanceUID = ""
    if not plan.peer.universal_matching:
        _fill_universal_keys(identifier)
    identifier = charsets.encode_request(plan.peer, identifier)
    return PeerRequest(model, level, identifier)


def derive_study_keys(plan: PeerPlan, lower_matches: list[Dataset]) -> Dataset:
    """Return each key of plan.derive_keys that the series or instance matches give values for.

    A key whose source the peer returned for no series or instance is left
    out, so the match keeps it absent: dcmqrscp 3.6.7, for one, returns
    SOPClassUID at no level, so SOPClassesInStudy can't be derived there.
    """
    derived = Dataset()
    for keyword in plan.derive_keys:
        source = DERIVABLE_STUDY_KEYS[keyword]
        values = sorted({value for match in lower_matches for value in split_values(match.get(source, ""))})
        if values:
            setattr(derived, keyword, values[0] if len(values) == 1 else values)
    return derived


def fill_derived(study_match: Dataset, derived: Dataset) -> None:
    """Copy each derived key into `study_match` unless the peer returned a value for it."""
    for element in derived:
        if not split_values(study_match.get(element.keyword, "")):
            study_match[element.tag] = deepcopy(element)


def series_lacking_sop_class(plan: PeerPlan, series_matches: list[Dataset]) -> list[str]:
    """Return the UIDs of the series whose match lacks SOPClassUID, when SOPClassesInStudy is derived.

    Many PACS return SOPClassUID at IMAGE level only, so those series
    need an IMAGE-level query each.
    """
    if "SOPClassesInStudy" not in plan.derive_keys:
        return []
    return [
        _single_value(match, "SeriesInstanceUID")
        for match in series_matches
        if not split_values(match.get("SOPClassUID", "")) and _single_value(match, "SeriesInstanceUID")
    ]


# --- max_matches --------------------------------------------------------------------


def split_by_study_date(request: PeerRequest) -> list[PeerRequest]:
    """Halve the StudyDate range of a request that may have been truncated.

    Returns [] when the request can't be split: StudyDate is not a closed
    range of more than one day, or the request was already halved
    MAX_SPLIT_DEPTH times.
    """
    if request.split_depth >= MAX_SPLIT_DEPTH or "StudyDate" not in request.identifier:
        return []
    bounds = _closed_date_range(str(request.identifier.StudyDate or ""))
    if bounds is None:
        return []
    first, last = bounds
    if first >= last:
        return []
    middle = first + (last - first) // 2
    halves = []
    for low, high in ((first, middle), (middle + timedelta(days=1), last)):
        identifier = deepcopy(request.identifier)
        identifier.StudyDate = f"{low:%Y%m%d}-{high:%Y%m%d}"
        halves.append(replace(request, identifier=identifier, split_depth=request.split_depth + 1))
    return halves


def _closed_date_range(value: str) -> tuple[date, date] | None:
    # NOTE: an open range such as "20240101-" is not split, so a full
    # reply to it from a peer with max_matches ends in 0xA700.
    found = _CLOSED_DATE_RANGE.match(value.strip())
    if found is None:
        return None
    try:
        return (
            date(int(found[1][:4]), int(found[1][4:6]), int(found[1][6:])),
            date(int(found[2][:4]), int(found[2][4:6]), int(found[2][6:])),
        )
    except ValueError:
        return None


# --- Matches ------------------------------------------------------------------------


def inherit_upper_keys(plan: PeerPlan, match: Dataset, upper_matches: list[Dataset]) -> None:
    """Copy the keys of the levels above, as the preconditions returned them, into `match`."""
    for keyword in plan.inherited_keys:
        if keyword in match:
            continue
        for upper in upper_matches:
            if keyword in upper:
                match[keyword] = deepcopy(upper[keyword])
                break


def collapse_match(plan: PeerPlan, match: Dataset) -> Dataset:
    """Return a peer's match at the workstation's Query/Retrieve Level.

    Only a STUDY match for a PATIENT query is collapsed: it keeps the
    patient keys and loses the study keys.
    """
    if plan.collapse_to != "PATIENT":
        return match
    patient = Dataset()
    for element in match:
        if element.keyword in _CONTROL_KEYWORDS or element.keyword in _PATIENT_KEYS:
            patient.add(deepcopy(element))
    patient.QueryRetrieveLevel = "PATIENT"
    return patient


def repair_unique_keys(query: Query, match: Dataset) -> bool:
    """Fill in the unique keys that `match` lacks from the query; return False if one is still missing.

    A unique key of a level above the Query/Retrieve Level has one value in
    a hierarchical query, so every match has that value. The unique key of
    the level itself is copied only when the query gives exactly one value.
    In a relational query, a parent unique key that the query does not give
    one value for may stay missing: the match is still identified by the
    unique key of its level.
    """
    levels = query.model.levels
    for level in levels[: levels.index(query.level) + 1]:
        keyword = UNIQUE_KEYS[level]
        if split_values(match.get(keyword, "")):
            continue
        values = query.key_values(keyword)
        if len(values) != 1 or any(mark in values[0] for mark in ("*", "?")):
            if query.relational and level != query.level:
                continue
            return False
        setattr(match, keyword, values[0])
    return True


# --- Retrieves ----------------------------------------------------------------------


def retrieve_request(peer: PeerSettings, query: Query) -> tuple[InformationModel, Dataset]:
    """Return the information model and identifier of a C-MOVE or C-GET to `peer`.

    With study_root_only, a Patient Root retrieve is sent in the Study Root
    model without PatientID. A PATIENT-level one becomes a STUDY-level
    retrieve of the patient's studies that the routing table has seen at this
    peer. RetrieveNotTranslatable is raised when it has seen none.

    With needs_parent_uids, a relational retrieve gets its missing parent
    UIDs from the routing table. A Patient Root one without one PatientID is
    sent in the Study Root model, since the routing table records no
    PatientID to fill in. RetrieveNotTranslatable is raised when a parent
    UID is still missing.
    """
    model = query.model
    level = query.level
    identifier = deepcopy(query.identifier)
    lacks_patient_id = len(split_values(identifier.get("PatientID", ""))) != 1
    if model is InformationModel.PATIENT_ROOT and (
        peer.study_root_only or (peer.needs_parent_uids and level != "PATIENT" and lacks_patient_id)
    ):
        model = InformationModel.STUDY_ROOT
        if level == "PATIENT":
            level = "STUDY"
            identifier = _patient_studies_identifier(peer, query)
        elif "PatientID" in identifier:
            del identifier.PatientID
    identifier.QueryRetrieveLevel = level
    if peer.needs_parent_uids and level in ("SERIES", "IMAGE"):
        _fill_from_routing_table(peer, identifier, _uid_parent_levels(level))
        _check_parent_uids_known(peer, model, level, identifier)
    return model, identifier


def _check_parent_uids_known(peer: PeerSettings, model: InformationModel, level: str, identifier: Dataset) -> None:
    # NOTE: a list of SOP Instance UIDs or Series Instance UIDs from several
    # parents is not split per parent, so such a retrieve raises here.
    for keyword in _parent_unique_keywords(model, level):
        if len(split_values(identifier.get(keyword, ""))) != 1:
            raise RetrieveNotTranslatable(
                f"peer {peer.name} needs every parent UID of a retrieve, and the routing table has no "
                f"{keyword} for the requested {UNIQUE_KEYS[level]} at that peer; query it first"
            )


def _patient_studies_identifier(peer: PeerSettings, query: Query) -> Dataset:
    patient_ids = query.key_values("PatientID")
    study_uids = routing.studies_of_patients(peer.name, patient_ids)
    if not study_uids:
        raise RetrieveNotTranslatable(
            f"peer {peer.name} offers only the Study Root model, and no study of the requested "
            f"patient was seen there; query the patient's studies first"
        )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = MultiValue(str, study_uids) if len(study_uids) > 1 else study_uids[0]
    return identifier

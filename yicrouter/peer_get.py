"""C-GET at a peer, with the router as Storage SCP on its own association.

A peer with `retrieve = "c-get"` sends the instances back on the router's
association (PS3.4 C.4.3), so it needs no knowledge of the router as a Move
Destination. The router must propose a presentation context with SCP/SCU Role
Selection (PS3.7 D.3.3.4) for every storage SOP Class that the peer will
send. These come from SOP Classes in Study (0008,0062) in a STUDY-level
C-FIND, or else from SOP Class UID in an IMAGE-level C-FIND.

An association carries at most 128 presentation contexts (PS3.8 9.3.2.2).
When the SOP Classes need more, the instances are listed by an IMAGE-level
C-FIND and retrieved by IMAGE-level C-GETs, over one association for each
group of SOP Classes whose contexts fit.

A peer that rejects the C-GET SOP Class or returns no role selection for any
storage SOP Class is retrieved with C-MOVE instead, and the router remembers
that for the peer until it restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    UID,
)
from pynetdicom import StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.config import PeerSettings
from yicrouter.logs import get_logger
from yicrouter.peer_find import PeerFind
from yicrouter.peer_move import MoveOutcome, MoveProgress, PeerMove, PeerRetrieve
from yicrouter.query import InformationModel, Query, split_values

log = get_logger(__name__)

# PS3.8 9.3.2.2: at most 128 presentation contexts in one A-ASSOCIATE-RQ.
MAX_CONTEXTS = 128
_UNCOMPRESSED: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# One presentation context each, so the peer can send compressed instances
# unchanged: an acceptor accepts only one transfer syntax per context.
_COMPRESSED = [
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless,
    JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless, DeflatedExplicitVRLittleEndian,
]
CONTEXTS_PER_SOP_CLASS = 1 + len(_COMPRESSED)
# One context of each association is the C-GET SOP Class.
SOP_CLASSES_PER_ASSOCIATION = (MAX_CONTEXTS - 1) // CONTEXTS_PER_SOP_CLASS

StoreHandler = Callable[[Any], int]

# Names of the peers found not to support C-GET with role selection, so they
# are retrieved with C-MOVE until the router restarts.
_get_unsupported: set[str] = set()
_get_unsupported_lock = threading.Lock()


def get_unsupported(peer: PeerSettings) -> bool:
    with _get_unsupported_lock:
        return peer.name in _get_unsupported


def _mark_get_unsupported(peer: PeerSettings, reason: str) -> None:
    """Remember a peer without C-GET support and log that once per process."""
    with _get_unsupported_lock:
        if peer.name in _get_unsupported:
            return
        _get_unsupported.add(peer.name)
    log.warning("peer_get_unsupported", peer=peer.name, peer_ae_title=peer.ae_title, reason=reason,
                fallback="c-move")


@dataclass(frozen=True)
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass
class StudyContents:
    """The storage SOP Classes that a retrieve covers, and its instances once listed."""

    sop_classes: list[str] = field(default_factory=list)
    instances: list[InstanceRef] | None = None
    # False when the peer listed no SOP Classes and the router proposes a default set.
    listed: bool = True


def _storage_contexts(sop_classes: list[str], compressed: bool) -> list[PresentationContext]:
    contexts = []
    for sop_class in sop_classes:
        contexts.append(build_context(sop_class, _UNCOMPRESSED))
        if compressed:
            contexts.extend(build_context(sop_class, syntax) for syntax in _COMPRESSED)
    return contexts


def _default_sop_classes() -> list[str]:
    """Return pynetdicom's 120 common storage SOP Classes, each proposed uncompressed only."""
    return [str(cx.abstract_syntax) for cx in StoragePresentationContexts][: MAX_CONTEXTS - 1]


class _Progress:
    """Counts over one or more C-GETs, as one C-GET response would give them.

    With `total` None there is one C-GET, whose counts pass through unchanged.
    Otherwise `total` is the number of instances listed, and sub-operations
    that a C-GET announced but never sent count as failed.
    """

    def __init__(self, total: int | None, on_progress: Callable[[MoveProgress], None]) -> None:
        self._total = total
        self._on_progress = on_progress
        self._done = MoveProgress(remaining=0)
        self._current = MoveProgress()

    def update(self, progress: MoveProgress) -> None:
        self._current = progress
        self._on_progress(self.total())

    def finish_one(self, final_status: int | None) -> None:
        """Add the counts of a finished C-GET to the total."""
        current = self._current
        unsent = current.remaining or 0 if final_status != status.SUCCESS else 0
        self._done.completed += current.completed
        self._done.failed += current.failed + unsent
        self._done.warning += current.warning
        self._current = MoveProgress()

    def total(self) -> MoveProgress:
        if self._total is None:
            return self._current
        completed = self._done.completed + self._current.completed
        failed = self._done.failed + self._current.failed
        warning = self._done.warning + self._current.warning
        return MoveProgress(max(self._total - completed - failed - warning, 0), completed, failed, warning)


class PeerGet(PeerRetrieve):
    """A C-GET at one peer; `unsupported` is the reason the peer can't serve it, or None."""

    def __init__(
        self, peer: PeerSettings, local_ae_title: str, max_pdu: int, on_store: StoreHandler, query: Query
    ) -> None:
        super().__init__(peer, local_ae_title, max_pdu)
        self._on_store = on_store
        self._query = query
        self.unsupported: str | None = None
        self._finds: list[PeerFind] = []

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        on_progress: Callable[[MoveProgress], None],
    ) -> MoveOutcome:
        # The listing C-FINDs use the identifier as this peer gets it, with
        # any parent UIDs and model translation that retrieve_request added.
        level = str(identifier.get("QueryRetrieveLevel", self._query.level))
        self._query = Query(model, level, identifier, self._query.relational)
        contents = self._contents()
        groups = _split(contents.sop_classes, contents.listed)
        outcome = MoveOutcome()
        if len(groups) == 1:
            progress = _Progress(None, on_progress)
            outcome.error = self._get(groups[0], contents.listed, model, [(identifier, message_id)],
                                      outcome, progress)
            return outcome
        # Some peers (Orthanc 1.10.1) end a whole C-GET at the first instance
        # without a presentation context, so each association requests only
        # the instances of its own SOP Classes.
        instances = self._listed_instances(contents)
        progress = _Progress(len(instances), on_progress)
        return self._get_groups(groups, instances, model, message_id, outcome, progress)

    def cancel(self) -> None:
        super().cancel()
        for find in list(self._finds):
            find.abort()

    def _contents(self) -> StudyContents:
        """Return the SOP Classes to propose, from the peer's C-FIND matches."""
        contents = StudyContents()
        if self._query.level in ("PATIENT", "STUDY"):
            contents.sop_classes = self._sop_classes_in_studies()
        if not contents.sop_classes:
            contents.instances = self._list_instances()
            contents.sop_classes = sorted({ref.sop_class_uid for ref in contents.instances or []})
        if not contents.sop_classes:
            # NOTE: only uncompressed contexts fit for 120 SOP Classes, so a
            # peer that can't list SOP Classes must decompress what it sends.
            log.info("peer_get_sop_classes_unknown", peer=self.peer.name, peer_ae_title=self.peer.ae_title,
                     reason="the peer returned neither SOP Classes in Study nor SOP Class UID")
            return StudyContents(_default_sop_classes(), None, listed=False)
        return contents

    def _find(self, identifier: Dataset) -> list[Dataset] | None:
        """Return the matches of one C-FIND at the peer, or None when it failed."""
        if self.cancel_requested:
            return None
        find = PeerFind(self.peer, self._local_ae_title, self._max_pdu)
        self._finds.append(find)
        matches: list[Dataset] = []
        outcome = find.run(self._query.model, identifier, matches.append)
        if outcome.error is not None:
            log.info("peer_get_find_failed", peer=self.peer.name, peer_ae_title=self.peer.ae_title,
                     level=identifier.QueryRetrieveLevel, reason=outcome.error)
            return None
        return matches

    def _sop_classes_in_studies(self) -> list[str]:
        """Return the union of SOP Classes in Study, or [] when any match lacks them."""
        identifier = self._find_identifier("STUDY")
        identifier.SOPClassesInStudy = ""
        matches = self._find(identifier) or []
        found: set[str] = set()
        for match in matches:
            classes = split_values(match.get("SOPClassesInStudy", ""))
            if not classes:
                return []
            found.update(classes)
        return sorted(found)

    def _list_instances(self) -> list[InstanceRef] | None:
        identifier = self._find_identifier("IMAGE")
        identifier.SOPClassUID = ""
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword not in identifier:
                setattr(identifier, keyword, "")
        matches = self._find(identifier)
        if matches is None:
            return None
        refs = [_instance_ref(match) for match in matches]
        return [ref for ref in refs if ref.sop_class_uid and ref.sop_instance_uid]

    def _find_identifier(self, level: str) -> Dataset:
        """Return a C-FIND identifier at `level` with the retrieve's unique keys."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        keywords = ["StudyInstanceUID"]
        if level == "IMAGE":
            keywords += ["SeriesInstanceUID", "SOPInstanceUID"]
        # Study Root defines Patient ID at STUDY level only (PS3.4 C.6.2.1).
        if level == "STUDY" or self._query.model is InformationModel.PATIENT_ROOT:
            keywords.append("PatientID")
        for keyword in keywords:
            if keyword in self._query.identifier:
                setattr(identifier, keyword, self._query.identifier.get(keyword))
        if level == "STUDY" and "StudyInstanceUID" not in identifier:
            identifier.StudyInstanceUID = ""
        return identifier

    def _listed_instances(self, contents: StudyContents) -> list[InstanceRef]:
        if contents.instances is None:
            contents.instances = self._list_instances() or []
        return contents.instances

    def _get(
        self,
        sop_classes: list[str],
        compressed: bool,
        model: InformationModel,
        requests: list[tuple[Dataset, int]],
        outcome: MoveOutcome,
        progress: _Progress,
    ) -> str | None:
        """Send each C-GET of `requests` over one association; return what went wrong, or None."""
        contexts = [build_context(model.get_sop_class), *_storage_contexts(sop_classes, compressed)]
        roles = [build_role(sop_class, scu_role=False, scp_role=True) for sop_class in sop_classes]

        def connect() -> Association:
            return self._associate_contexts(contexts, roles, [(evt.EVT_C_STORE, self._on_store)])

        def exchange(assoc: Association) -> None:
            self.unsupported = _role_problem(assoc, model, sop_classes, self.peer)
            if self.unsupported is not None:
                return
            for identifier, message_id in requests:
                sent = self._send_get(assoc, model, identifier, message_id, outcome, progress)
                progress.finish_one(outcome.final_status)
                if not sent:
                    return

        return self._exchange(model.get_sop_class, exchange, connect=connect)

    def _send_get(
        self,
        assoc: Association,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        outcome: MoveOutcome,
        progress: _Progress,
    ) -> bool:
        """Send one C-GET and handle its responses; return False when it was cancelled or failed."""
        step = MoveOutcome()
        sent = self._send_retrieve(
            assoc, model.get_sop_class, message_id,
            lambda: assoc.send_c_get(identifier, model.get_sop_class, msg_id=message_id),
            step, progress.update,
        )
        if not sent:
            outcome.final_status = status.CANCEL
            return False
        progress.update(step.progress)
        outcome.progress = progress.total()
        outcome.failed_uids.extend(step.failed_uids)
        outcome.final_status = step.final_status
        outcome.error_comment = step.error_comment
        return step.final_status is not None and step.final_status != status.CANCEL

    def _get_groups(
        self,
        groups: list[list[str]],
        instances: list[InstanceRef],
        model: InformationModel,
        message_id: int,
        outcome: MoveOutcome,
        progress: _Progress,
    ) -> MoveOutcome:
        """Retrieve the listed instances by IMAGE-level C-GETs, one association per group of SOP Classes."""
        for group in groups:
            requests = [
                (identifier, (message_id + index) % 65535 + 1)
                for index, identifier in enumerate(_image_identifiers(model, self._query, instances, group))
            ]
            if not requests:
                continue
            error = self._get(group, True, model, requests, outcome, progress)
            if error is not None or self.unsupported or self.cancel_requested:
                outcome.error = error
                return outcome
        outcome.progress = progress.total()
        outcome.final_status = _combined_status(outcome.progress)
        return outcome


def _combined_status(progress: MoveProgress) -> int:
    if progress.failed == 0 and progress.warning == 0:
        return status.SUCCESS
    if progress.completed + progress.warning == 0:
        return status.GET_OUT_OF_RESOURCES_SUBOPERATIONS
    return status.GET_SUBOPERATIONS_WARNING


def _split(sop_classes: list[str], compressed: bool) -> list[list[str]]:
    """Split SOP Classes into groups whose presentation contexts fit one association each."""
    size = SOP_CLASSES_PER_ASSOCIATION if compressed else MAX_CONTEXTS - 1
    return [sop_classes[i:i + size] for i in range(0, len(sop_classes), size)] or [[]]


def _instance_ref(match: Dataset) -> InstanceRef:
    def text(keyword: str) -> str:
        return str(match.get(keyword, "") or "").strip()

    return InstanceRef(text("StudyInstanceUID"), text("SeriesInstanceUID"), text("SOPInstanceUID"),
                       text("SOPClassUID"))


def _image_identifiers(
    model: InformationModel, query: Query, instances: list[InstanceRef], sop_classes: list[str]
) -> list[Dataset]:
    """Return one IMAGE-level C-GET identifier per series, for the instances of `sop_classes`."""
    by_series: dict[tuple[str, str], list[str]] = {}
    for ref in instances:
        if ref.sop_class_uid in sop_classes:
            by_series.setdefault((ref.study_uid, ref.series_uid), []).append(ref.sop_instance_uid)
    identifiers = []
    for (study_uid, series_uid), uids in by_series.items():
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        if model is InformationModel.PATIENT_ROOT:
            identifier.PatientID = query.identifier.get("PatientID", "")
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        identifier.SOPInstanceUID = uids
        identifiers.append(identifier)
    return identifiers


def _role_problem(assoc: Association, model: InformationModel, sop_classes: list[str],
                  peer: PeerSettings) -> str | None:
    """Return why the peer can't serve C-GET on `assoc`, or None when it can."""
    accepted = assoc.accepted_contexts
    if not any(cx.abstract_syntax == model.get_sop_class for cx in accepted):
        return f"peer rejected the presentation context for {model.value} C-GET"
    with_role = {str(cx.abstract_syntax) for cx in accepted if cx.as_scp}
    if not with_role:
        return "peer accepted no storage SOP Class with the SCP role for the router (SCP/SCU Role Selection)"
    missing = [uid for uid in sop_classes if uid not in with_role]
    if missing:
        log.warning("peer_get_roles_partial", peer=peer.name, peer_ae_title=peer.ae_title,
                    sop_classes_without_role=missing,
                    reason="the peer will fail the sub-operations of these SOP Classes")
    return None


class PeerGetOrMove:
    """Retrieve call that uses C-GET at a peer, or C-MOVE when the peer rejects C-GET role selection."""

    def __init__(
        self, peer: PeerSettings, local_ae_title: str, max_pdu: int, on_store: StoreHandler, query: Query
    ) -> None:
        self.peer = peer
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._on_store = on_store
        self._query = query
        self._lock = threading.Lock()
        self._current: PeerRetrieve | None = None
        self._cancelled = False
        self._aborted = False

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        message_id: int,
        on_progress: Callable[[MoveProgress], None],
    ) -> MoveOutcome:
        if not get_unsupported(self.peer):
            get = PeerGet(self.peer, self._local_ae_title, self._max_pdu, self._on_store, self._query)
            self._start(get)
            outcome = get.run(model, identifier, message_id, on_progress)
            if get.unsupported is None:
                return outcome
            _mark_get_unsupported(self.peer, get.unsupported)
        move = PeerMove(self.peer, self._local_ae_title, self._max_pdu)
        self._start(move)
        return move.run(model, identifier, message_id, on_progress)

    def _start(self, call: PeerRetrieve) -> None:
        """Make `call` the current one, passing on a cancel or abort that came first."""
        with self._lock:
            self._current = call
            cancelled, aborted = self._cancelled, self._aborted
        if cancelled:
            call.cancel()
        if aborted:
            call.abort()

    def cancel(self) -> None:
        call = self._record(cancel=True)
        if call is not None:
            call.cancel()

    def abort(self) -> None:
        call = self._record(abort=True)
        if call is not None:
            call.abort()

    def _record(self, cancel: bool = False, abort: bool = False) -> PeerRetrieve | None:
        """Record a cancel or abort for the calls still to start, and return the current call."""
        with self._lock:
            self._cancelled = self._cancelled or cancel
            self._aborted = self._aborted or abort
            return self._current

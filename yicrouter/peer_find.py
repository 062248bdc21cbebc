"""C-FIND at one peer: the requests of one PeerPlan on one association, with C-CANCEL and combined date-time matching."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from yicrouter import status
from yicrouter.config import PeerSettings
from yicrouter.dialect import (
    PeerPlan,
    PeerRequest,
    apply_inherited,
    derivation_request,
    derive_study_keys,
    fill_derived,
    inherit_upper_keys,
    needs_derivation,
    parent_identity,
    series_lacking_sop_class,
    split_by_study_date,
    with_parent_uids,
)
from yicrouter.logs import get_logger
from yicrouter.peer_client import PeerCall, PeerError, context_id
from yicrouter.query import InformationModel
from yicrouter.reactor import pause_reactor

log = get_logger(__name__)


@dataclass
class FindOutcome:
    matches: int = 0
    error: str | None = None
    final_status: int | None = None
    # C-FIND requests sent to the peer for one workstation C-FIND.
    requests: int = 0
    # Requests halved by date range because the peer may have truncated them.
    splits: int = 0
    # Whether a reply may have been cut off at max_matches and could not be split.
    truncated: bool = False
    cancelled: bool = False
    # STUDY matches whose PeerPlan.derive_keys were derived from their series.
    derived: int = 0
    # STUDY matches whose derivation query failed; they are passed on as the peer returned them.
    derive_failed: int = 0


# Seconds that a peer has to end a C-FIND after a C-CANCEL before the router aborts the association.
FIND_CANCEL_GRACE = 1.0


class PeerFind(PeerCall):
    """The C-FINDs of one PeerPlan, on one association, each pending match handed to a callback."""

    def __init__(self, peer: PeerSettings, local_ae_title: str, max_pdu: int) -> None:
        super().__init__(peer, local_ae_title, max_pdu)
        self._models: list[InformationModel] = []
        self._propose_combined_datetime = False
        self._running: tuple[Association, int, int] | None = None
        self._cancel_requested = False
        self._finished = threading.Event()
        self._next_message_id = 1
        # Derived keys by Study Instance UID, so a study returned by several
        # requests of one plan is derived once.
        self._derived: dict[str, Dataset] = {}

    def run(
        self,
        model: InformationModel,
        identifier: Dataset,
        on_match: Callable[[Dataset], None],
    ) -> FindOutcome:
        """Send one C-FIND with `identifier` unchanged."""
        level = str(identifier.get("QueryRetrieveLevel", "") or "")
        request = PeerRequest(model, level, identifier)
        return self.run_plan(PeerPlan(self.peer, (request,)), on_match)

    def run_plan(self, plan: PeerPlan, on_match: Callable[[Dataset], None]) -> FindOutcome:
        """Send every request of `plan`, splitting those that max_matches may have truncated."""
        outcome = FindOutcome()
        self._models = plan.models
        self._propose_combined_datetime = plan.combined_datetime

        def exchange(assoc: Association) -> None:
            self._check_combined_datetime(assoc, plan)
            upper_matches = self._run_preconditions(assoc, plan, outcome)
            if upper_matches is None:
                return

            def deliver(match: Dataset) -> None:
                inherit_upper_keys(plan, match, upper_matches)
                outcome.matches += 1
                on_match(match)

            self._run_requests(assoc, plan, deliver, outcome)

        try:
            error = self._exchange(self._models[0].find_sop_class, exchange)
        finally:
            self._finished.set()
        if error is not None:
            outcome.error = error
        return outcome

    def _run_requests(
        self, assoc: Association, plan: PeerPlan, deliver: Callable[[Dataset], None], outcome: FindOutcome
    ) -> None:
        work = deque(plan.requests)
        while work and not self._cancel_requested:
            request = work.popleft()
            if request.parents_from is not None:
                work.extendleft(reversed(self._expand(assoc, request, outcome)))
                continue
            count = self._find_and_derive(assoc, plan, request, deliver, outcome)
            cut_short = outcome.cancelled and not self._cancel_requested
            if cut_short:
                outcome.cancelled = False
            if not cut_short and (not plan.peer.max_matches or count < plan.peer.max_matches):
                continue
            halves = split_by_study_date(request)
            if halves:
                outcome.splits += 1
                work.extendleft(reversed(halves))
            else:
                outcome.truncated = True

    def _run_preconditions(
        self, assoc: Association, plan: PeerPlan, outcome: FindOutcome
    ) -> list[Dataset] | None:
        """Return the first match of each precondition, or None when one has no match."""
        upper_matches: list[Dataset] = []
        for precondition in plan.preconditions:
            found: list[Dataset] = []
            self._find(assoc, precondition, found.append, outcome)
            if not found or self._cancel_requested:
                return None
            upper_matches.append(found[0])
        return upper_matches

    def _expand(self, assoc: Association, request: PeerRequest, outcome: FindOutcome) -> list[PeerRequest]:
        """Run the parent query of `request` and return one request per parent match."""
        assert request.parents_from is not None
        parents: list[Dataset] = []
        pending = deque([request.parents_from])
        while pending and not self._cancel_requested:
            parent = pending.popleft()
            if parent.parents_from is not None:
                pending.extendleft(reversed(self._expand(assoc, parent, outcome)))
                continue
            self._find(assoc, parent, parents.append, outcome)
        unique = {parent_identity(request.parents_from, match): match for match in parents}
        expanded = [with_parent_uids(request, match) for match in unique.values()]
        return [item for item in expanded if item is not None]

    def _find_and_derive(
        self,
        assoc: Association,
        plan: PeerPlan,
        request: PeerRequest,
        deliver: Callable[[Dataset], None],
        outcome: FindOutcome,
    ) -> int:
        """Send one C-FIND, then derive plan.derive_keys for each STUDY match that lacks them.

        The association allows one outstanding request, so the matches that
        need a derivation query wait until the C-FIND has ended.
        """
        if not plan.derive_keys or request.level != "STUDY":
            return self._find(assoc, request, deliver, outcome)
        waiting: list[Dataset] = []

        def sort(match: Dataset) -> None:
            if needs_derivation(plan, match):
                waiting.append(match)
            else:
                deliver(match)

        count = self._find(assoc, request, sort, outcome)
        for match in waiting:
            if self._cancel_requested:
                break
            self._derive(assoc, plan, match, outcome)
            deliver(match)
        return count

    def _derive(self, assoc: Association, plan: PeerPlan, study_match: Dataset, outcome: FindOutcome) -> None:
        """Fill plan.derive_keys into a STUDY match from a SERIES-level query of the study at this peer."""
        study_uid = str(study_match.get("StudyInstanceUID", "") or "").strip()
        cached = self._derived.get(study_uid)
        if cached is None:
            lower = self._query_study_contents(assoc, plan, study_match, outcome)
            if lower is None:
                return
            cached = derive_study_keys(plan, lower)
            self._derived[study_uid] = cached
            outcome.derived += 1
            log.debug("study_keys_derived", peer=self.peer.name, peer_ae_title=self.peer.ae_title,
                      study_instance_uid=study_uid, matches=len(lower),
                      derived={element.keyword: str(element.value) for element in cached})
        fill_derived(study_match, cached)

    def _query_study_contents(
        self, assoc: Association, plan: PeerPlan, study_match: Dataset, outcome: FindOutcome
    ) -> list[Dataset] | None:
        """Return the study's series matches, and instance matches where needed; None when that failed."""
        series_request = derivation_request(plan, study_match, "SERIES")
        if series_request is None:
            return None
        found: list[Dataset] = []
        try:
            self._find(assoc, series_request, found.append, outcome)
            for series_uid in series_lacking_sop_class(plan, found):
                image_request = derivation_request(plan, study_match, "IMAGE", series_uid)
                if image_request is not None:
                    self._find(assoc, image_request, found.append, outcome)
        except PeerError as exc:
            if self.aborted or not assoc.is_established:
                raise
            outcome.derive_failed += 1
            log.warning("study_keys_not_derived", peer=self.peer.name, peer_ae_title=self.peer.ae_title,
                        study_instance_uid=str(study_match.get("StudyInstanceUID", "")), reason=str(exc))
            return None
        return found

    def _find(
        self,
        assoc: Association,
        request: PeerRequest,
        on_match: Callable[[Dataset], None],
        outcome: FindOutcome,
    ) -> int:
        """Send one C-FIND and return its number of matches; a failure status raises PeerError."""
        presentation_context_id = context_id(assoc, request.model.find_sop_class)
        message_id = self._next_message_id
        self._next_message_id = message_id % 0xFFFF + 1
        with self._lock:
            if self._cancel_requested:
                return 0
            self._running = (assoc, message_id, presentation_context_id)
        outcome.requests += 1
        try:
            pause_reactor(assoc)
            responses = assoc.send_c_find(request.identifier, request.model.find_sop_class, msg_id=message_id)
            return _read_find_responses(responses, request, on_match, outcome)
        finally:
            with self._lock:
                self._running = None

    def _associate(self, sop_class_uid: str) -> Association:
        """Associate with a context for every model of the plan, and propose combined date-time matching when asked."""
        uids = dict.fromkeys([sop_class_uid, *(model.find_sop_class for model in self._models)])
        extended: list[Any] = []
        if self._propose_combined_datetime:
            for model in self._models:
                item = SOPClassExtendedNegotiation()
                item.sop_class_uid = model.find_sop_class
                item.service_class_application_information = COMBINED_DATETIME_INFORMATION
                extended.append(item)
        return self._associate_contexts([build_context(uid) for uid in uids], extended or None)

    def _check_combined_datetime(self, assoc: Association, plan: PeerPlan) -> None:
        if not plan.combined_datetime:
            return
        accepted = {str(uid): information for uid, information in assoc.acceptor.sop_class_extended.items()}
        if all(accepts_combined_datetime(accepted.get(m.find_sop_class, b"")) for m in plan.models):
            return
        # NOTE: the request still carries both date and time ranges, so a
        # peer configured with combined_datetime that does not accept it
        # matches them independently and may miss matches.
        log.warning(
            "peer_combined_datetime_not_accepted", peer=self.peer.name, peer_ae_title=self.peer.ae_title,
        )

    def cancel(self) -> None:
        """Send C-CANCEL for the running C-FIND (PS3.7 9.1.2.1) and send no further requests.

        The association is aborted when the call has not ended FIND_CANCEL_GRACE seconds later.
        """
        with self._lock:
            self._cancel_requested = True
            target = self._running
        if target is not None:
            assoc, message_id, context_id = target
            try:
                if assoc.is_established:
                    assoc.send_c_cancel(message_id, context_id)
            except Exception:  # pynetdicom raises many types on a closing association
                log.exception("peer_cancel_failed", peer=self.peer.name, peer_ae_title=self.peer.ae_title)
        timer = threading.Timer(FIND_CANCEL_GRACE, self._abort_unless_finished)
        timer.daemon = True
        timer.start()

    def _abort_unless_finished(self) -> None:
        if not self._finished.is_set():
            self.abort()


# PS3.4 C.5.1.1, table C.5-1: byte 2 of the Service-Class-Application-Information is
# Date-Time Matching, 1 for combined date and time range matching.
COMBINED_DATETIME_INFORMATION: Final = b"\x00\x01"


def accepts_combined_datetime(information: bytes) -> bool:
    """Return True when extended negotiation information selects combined date-time matching."""
    return len(information) >= 2 and information[1] == 1


def _read_find_responses(
    responses: Iterator[tuple[Dataset, Dataset | None]],
    request: PeerRequest,
    on_match: Callable[[Dataset], None],
    outcome: FindOutcome,
) -> int:
    """Hand each pending match to `on_match` and return their number; a failure status raises PeerError."""
    count = 0
    for rsp, match in responses:
        if "Status" not in rsp:
            raise PeerError("association aborted or DIMSE response timed out")
        rsp_status = int(rsp.Status)
        if status.is_pending(rsp_status):
            if match is not None:
                count += 1
                on_match(apply_inherited(request, match))
            continue
        outcome.final_status = rsp_status
        if rsp_status == status.CANCEL:
            # Without a C-CANCEL from the router, this means the peer
            # stopped at a result limit (Orthanc 1.10.1 does so with
            # LimitFindResults), so the caller treats the reply as cut short.
            outcome.cancelled = True
        elif rsp_status != status.SUCCESS:
            raise PeerError(f"final status 0x{rsp_status:04X}")
    return count

"""An in-process pynetdicom C-FIND SCU that records when each response arrives."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Mapping

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

import bench  # noqa: F401  (puts tests/ on sys.path for the harness imports)
from harness.ports import DicomNode
from yicrouter import status

# pynetdicom logs every association at INFO, which would bury the results table.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class QueryFailed(RuntimeError):
    """Raised when a benchmark C-FIND is rejected, aborted or ends with a failure status."""


@dataclass
class TimedFind:
    """One C-FIND: seconds from the association request to each response."""

    node: DicomNode
    # (seconds, Study Instance UID) of each Pending response, in arrival order.
    matches: list[tuple[float, str]] = field(default_factory=list)
    total: float = float("nan")
    # Seconds until the association was established.
    associated: float = float("nan")
    final_status: int | None = None

    @property
    def first_match(self) -> float:
        return self.matches[0][0] if self.matches else float("nan")

    def last_match_of(self, study_uids: set[str]) -> float:
        """Return when the last match with one of `study_uids` arrived, or NaN."""
        times = [seconds for seconds, uid in self.matches if uid in study_uids]
        return max(times) if times else float("nan")


def study_query(patient_id_pattern: str) -> Dataset:
    """Return a STUDY-level identifier that matches Patient IDs against a wild card pattern."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = patient_id_pattern
    identifier.PatientName = ""
    identifier.StudyInstanceUID = ""
    identifier.StudyDate = ""
    return identifier


def timed_find(node: DicomNode, identifier: Dataset, calling_ae: str,
               timeout: float = 60.0) -> TimedFind:
    """Send one C-FIND on a new association and time every response.

    The clock starts before the association request, so each time includes
    association setup, as for a workstation. Raises QueryFailed unless the
    final status is Success.
    """
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    result = TimedFind(node)
    started = time.perf_counter()
    association = ae.associate(node.host, node.port, ae_title=node.ae_title)
    if not association.is_established:
        raise QueryFailed(f"association with {node} was rejected or aborted")
    result.associated = time.perf_counter() - started
    try:
        for response_status, match in association.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            elapsed = time.perf_counter() - started
            if not response_status:
                raise QueryFailed(f"C-FIND to {node} got no response within {timeout} s")
            result.final_status = int(response_status.Status)
            if result.final_status in (status.PENDING, status.PENDING_WARNING) and match is not None:
                result.matches.append((elapsed, str(match.get("StudyInstanceUID", ""))))
        result.total = time.perf_counter() - started
    finally:
        association.release()
    if result.final_status != status.SUCCESS:
        raise QueryFailed(f"C-FIND to {node} ended with status 0x{result.final_status or 0:04X}")
    return result


def expect_matches(result: TimedFind, study_uids: set[str]) -> None:
    """Raise QueryFailed unless the C-FIND returned exactly the expected studies."""
    returned = {uid for _, uid in result.matches}
    if returned != study_uids:
        raise QueryFailed(
            f"C-FIND to {result.node} returned {len(returned)} studies, expected "
            f"{len(study_uids)}: missing {sorted(study_uids - returned)}, "
            f"unexpected {sorted(returned - study_uids)}"
        )

"""A pynetdicom C-FIND SCP that records the raw bytes of every request identifier.

It plays a peer that a real PACS can't be made to play on demand: one that
ignores chosen matching keys yet returns their values, and one whose requests
a test must see byte for byte. It serves STUDY-level queries of both
information models from study records (see `study_record`), matching with
yicrouter.matching.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.transport import ThreadedAssociationServer

from harness.ports import LOOPBACK, DicomNode
from yicrouter import status
from yicrouter.matching import MatchRules, dataset_matches

_CONTROL_KEYWORDS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


@dataclass(frozen=True)
class RecordedRequest:
    """One C-FIND request as it arrived: the identifier's bytes and its decoded form."""

    raw: bytes
    identifier: Dataset

    def element_bytes(self, keyword: str) -> bytes | None:
        """Return the undecoded value of one element, without its padding, or None when absent.

        The identifier is read again from `raw`, so pydicom has not decoded
        the value with any character set yet.
        """
        fresh = decode(BytesIO(self.raw), True, True)
        if keyword not in fresh:
            return None
        element = fresh.get_item(keyword)
        value = element.value
        return value.rstrip(b" ") if isinstance(value, bytes) else None


def study_record(path: Path) -> Dataset:
    """Read a file's header as one STUDY-level record, with ModalitiesInStudy derived from Modality."""
    record = dcmread(path, stop_before_pixels=True)
    if "Modality" in record:
        record.ModalitiesInStudy = [record.Modality]
    return record


class RecordingFindPeer:
    """A Find SCP on a loopback port that serves `records` and records each request.

    Keys named in `ignored_keys` take no part in its matching, but their
    values are returned, as a PACS that does not support them would.
    The identifiers are exchanged in Implicit VR Little Endian.
    """

    def __init__(self, ae_title: str, records: Iterable[Dataset], ignored_keys: Iterable[str] = ()) -> None:
        self.ae_title = ae_title
        self.records = list(records)
        self.ignored_keys = frozenset(ignored_keys)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._ae = AE(ae_title=ae_title)
        for sop_class in (StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind):
            self._ae.add_supported_context(sop_class, "1.2.840.10008.1.2")

    @property
    def node(self) -> DicomNode:
        if self._server is None:
            raise RuntimeError(f"RecordingFindPeer {self.ae_title} is not running")
        return DicomNode(self.ae_title, int(self._server.server_address[1]))

    def start(self) -> "RecordingFindPeer":
        self._server = self._ae.start_server(
            (LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._handle_find)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._ae.shutdown()
            self._server = None

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def _handle_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        raw = event.request.Identifier.getvalue()
        identifier = event.identifier
        with self._lock:
            self.requests.append(RecordedRequest(raw, identifier))
        if str(identifier.get("QueryRetrieveLevel", "")).strip() != "STUDY":
            yield status.FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        keys = Dataset()
        for element in identifier:
            if element.keyword not in self.ignored_keys:
                keys.add(element)
        for record in self.records:
            if dataset_matches(keys, record, MatchRules()):
                yield status.PENDING, self._response(identifier, record)
        yield status.SUCCESS, None

    def _response(self, identifier: Dataset, record: Dataset) -> Dataset:
        response = Dataset()
        if "SpecificCharacterSet" in record:
            response.SpecificCharacterSet = record.SpecificCharacterSet
        for element in identifier:
            if element.keyword in _CONTROL_KEYWORDS:
                continue
            if element.tag in record:
                response.add(record[element.tag])
            else:
                response.add(DataElement(element.tag, element.VR, empty_value_for_VR(element.VR)))
        response.QueryRetrieveLevel = "STUDY"
        return response

    def __enter__(self) -> "RecordingFindPeer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

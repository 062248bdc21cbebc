"""A pure-Python sample PACS built on pynetdicom, for the demo and for test fakes.

SamplePacs serves Verification, Patient Root and Study Root Query/Retrieve
(C-FIND, C-MOVE, C-GET) and Storage on one port. It reads only the headers of
its files at start and reads each file in full just before sending it, so
memory does not grow with the pixel data. FaultOptions make it show faults
that a real PACS can't be made to show on demand.

Everything is logged at DEBUG through the standard logging module.
"""

from __future__ import annotations

import logging
import os
import re
import itertools
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
# pynetdicom creates the SOP Class names at import time, so mypy can't see them.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from yicrouter.contexts import context_list
from yicrouter.demo.matching import (
    PATIENT_ROOT_LEVELS,
    RANGE_VRS,
    WILDCARD_VRS,
    STUDY_ROOT_LEVELS,
    IdentifierError,
    IndexedInstance,
    check_unique_keys,
    find_matches,
    read_level,
    select_instances,
)
from yicrouter.status import (
    CANCEL,
    FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    PENDING,
    STORE_CANNOT_UNDERSTAND,
    STORE_OUT_OF_RESOURCES,
    SUCCESS,
)

LOGGER = logging.getLogger(__name__)

# PS3.4 C.4.3.1.4, table C.4-3 (C-GET): the same code as for C-FIND and C-MOVE.
GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
# PS3.7 Annex C, general status codes: Processing Failure.
PROCESSING_FAILURE: Final = 0x0110

# PS3.8 9.3.2.2: an A-ASSOCIATE-RQ carries at most 128 presentation contexts.
MAX_PRESENTATION_CONTEXTS: Final = 128

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): rejected-permanent, by the DICOM UL
# service-user, because the calling AE title is not recognized.
REJECT_PERMANENT: Final = 0x01
REJECT_SOURCE_SERVICE_USER: Final = 0x01
REJECT_CALLING_AE_NOT_RECOGNIZED: Final = 0x03

# Seconds between checks while waiting for a C-CANCEL or for rejected associations to end.
POLL_INTERVAL: Final = 0.05
# How long stop() waits for rejected associations to close, in seconds.
REJECTION_GRACE: Final = 2.0
# The relay that omit_move_originator uses serves only this PACS itself.
RELAY_HOST: Final = "127.0.0.1"

FIND_MODELS: Final[dict[str, tuple[str, ...]]] = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT_LEVELS,
}
# Non-unique keys of each level that reject_relational_keys looks for above the
# Query/Retrieve Level. In the Study Root model patient keys are STUDY keys.
_LEVEL_KEYS: Final[dict[str, frozenset[str]]] = {
    "PATIENT": frozenset({"PatientName", "PatientBirthDate", "PatientSex"}),
    "STUDY": frozenset({"StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
                        "ModalitiesInStudy", "ReferringPhysicianName", "StudyID"}),
    "SERIES": frozenset({"Modality", "SeriesNumber", "SeriesDescription"}),
    "IMAGE": frozenset(),
}
STUDY_LEVEL: Final = "STUDY"

MOVE_MODELS: Final[dict[str, tuple[str, ...]]] = {
    PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT_LEVELS,
}
GET_MODELS: Final[dict[str, tuple[str, ...]]] = {
    PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT_LEVELS,
}

_UID_PATTERN: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNCOMPRESSED_SYNTAXES: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# Values that the handlers yield to pynetdicom's Query/Retrieve service class.
StatusAndDataset: TypeAlias = tuple[int, Dataset | None]
MoveDestination: TypeAlias = tuple[None, None] | tuple[str, int, dict[str, Any]]
SubOperationYield: TypeAlias = int | StatusAndDataset
MoveYield: TypeAlias = MoveDestination | SubOperationYield


@dataclass(frozen=True)
class FaultOptions:
    """Faults that a SamplePacs shows on demand. Every fault is off by default.

    Delays are in seconds. A count of None turns its fault off.
    """

    # Delay before each C-FIND Pending response.
    find_delay: float = 0.0
    # After this many C-FIND matches, abort the association instead of sending the next.
    find_abort_after: int | None = None
    # Abort the requester's association after this many C-MOVE sub-operations.
    move_abort_after: int | None = None
    # Send C-MOVE sub-operations without Move Originator AE Title and Message ID.
    omit_move_originator: bool = False
    # Delay before each C-STORE sub-operation of a C-MOVE or C-GET.
    store_delay: float = 0.0
    # Reject every association request with A-ASSOCIATE-RJ.
    reject_association: bool = False
    # Accept C-GET but return no SCP/SCU Role Selection items, so a C-GET
    # requester never gets the SCP role for storage SOP Classes.
    reject_role_selection: bool = False
    # Offer only the Study Root Query/Retrieve information model.
    study_root_only: bool = False
    # Reject with 0xA900 a C-FIND with a zero-length key whose VR allows wild cards.
    reject_universal_keys: bool = False
    # Reject with 0xA900 a C-FIND with a range or wild card in a DA, TM or DT key.
    reject_date_ranges: bool = False
    # Reject with 0xA900 a C-FIND with a key of a level above the Query/Retrieve
    # Level that is not a unique key, as a PACS without relational queries may.
    reject_relational_keys: bool = False
    # Stop after this many C-FIND matches and still return Success, as a PACS
    # with a result limit does.
    max_matches: int | None = None
    # Send this many made-up STUDY matches before the real ones of a STUDY-level C-FIND.
    synthetic_matches: int = 0
    # Keep every C-FIND identifier received, in SamplePacs.find_identifiers.
    record_identifiers: bool = False
    # Keywords left out of every C-FIND match, such as a unique key.
    omit_match_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (bool, tuple)) or value is None:
                continue
            if value < 0:
                raise ValueError(f"FaultOptions.{field.name} must be 0 or more, got {value}")


class SamplePacs:
    """A small PACS on one TCP port (loopback by default), serving the DICOM files it is given.

    `move_destinations` maps the AE title of each known Move Destination to
    its (host, port). Instances received by C-STORE are written to
    `storage_dir`, or to a temporary folder that stop() deletes when no
    `storage_dir` is given. A `port` of 0 binds a free port, which the `port`
    property returns after start().
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        files: Iterable[Path],
        move_destinations: dict[str, tuple[str, int]],
        host: str = "127.0.0.1",
        options: FaultOptions | None = None,
        storage_dir: Path | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        # pynetdicom raises ValueError for an invalid AE title.
        self._ae = self._build_ae(ae_title)
        self._host = host
        self._port = port
        self._files = [Path(path) for path in files]
        self._move_destinations = {
            title.strip(): address for title, address in move_destinations.items()
        }
        self._options = options or FaultOptions()
        if self._options.study_root_only:
            for sop_class in (PatientRootQueryRetrieveInformationModelFind,
                              PatientRootQueryRetrieveInformationModelMove,
                              PatientRootQueryRetrieveInformationModelGet):
                self._ae.remove_supported_context(sop_class)
        # C-FIND identifiers received, when options.record_identifiers is set.
        self.find_identifiers: list[Dataset] = []
        # Number of C-FINDs that ended because a C-CANCEL arrived.
        self.find_cancels = 0
        self._storage_dir = storage_dir
        self._temporary_dir: tempfile.TemporaryDirectory[str] | None = None
        self._index: dict[str, IndexedInstance] = {}
        self._index_lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    @property
    def ae_title(self) -> str:
        return str(self._ae.ae_title)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port: the bound port once started, else the configured one."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def options(self) -> FaultOptions:
        return self._options

    @property
    def instance_count(self) -> int:
        """Number of SOP Instances in the index."""
        with self._index_lock:
            return len(self._index)

    def start(self) -> None:
        """Index the files and start serving on host:port without blocking."""
        if self._server is not None:
            raise RuntimeError(f"SamplePacs {self.ae_title} is already running")

        if self._options.reject_role_selection:
            _ignore_role_selection(self._ae)
        storage_dir = self._prepare_storage_dir()
        self._load_index([*self._files, *sorted(storage_dir.glob("*.dcm"))])

        handlers: list[EventHandlerType] = [
            (evt.EVT_C_FIND, self._handle_find),
            (evt.EVT_C_MOVE, self._handle_move),
            (evt.EVT_C_GET, self._handle_get),
            (evt.EVT_C_STORE, self._handle_store),
        ]
        if self._options.reject_association:
            handlers.append((evt.EVT_REQUESTED, _reject_association))
        try:
            self._server = _start_server(self._ae, (self._host, self._port), handlers)
        except OSError:
            self._remove_temporary_dir()
            raise
        LOGGER.debug(
            "SamplePacs %s started on %s:%d with %d instances, faults %s",
            self.ae_title,
            self._host,
            self.port,
            self.instance_count,
            self._options,
        )

    def stop(self) -> None:
        """Abort the open associations and stop serving. Calling it twice is harmless."""
        if self._server is None:
            return
        self._wait_for_rejected_associations()
        self._ae.shutdown()
        self._server = None
        self._remove_temporary_dir()
        LOGGER.debug("SamplePacs %s stopped", self.ae_title)

    def __enter__(self) -> SamplePacs:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_for_rejected_associations(self) -> None:
        """Wait up to REJECTION_GRACE seconds for rejected associations to end.

        After sending A-ASSOCIATE-RJ, pynetdicom 3.0.4 waits for the peer to
        close the connection. The A-ABORT that AE.shutdown() sends in that
        state makes pynetdicom's DUL thread raise InvalidEventError (Evt15 in
        Sta13), so stop() lets those associations end first.
        """
        deadline = time.monotonic() + REJECTION_GRACE
        while time.monotonic() < deadline:
            if not any(assoc.is_rejected for assoc in self._ae.active_associations):
                return
            time.sleep(POLL_INTERVAL)

    # Set-up

    @staticmethod
    def _build_ae(ae_title: str) -> AE:
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        for sop_class in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
            ae.add_supported_context(sop_class)
        # scu_role and scp_role accept the roles a requester proposes, so a
        # C-GET requester can take the Storage SCP role (PS3.7 D.3.3.4).
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(
                str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        return ae

    def _prepare_storage_dir(self) -> Path:
        if self._storage_dir is None:
            self._temporary_dir = tempfile.TemporaryDirectory(prefix="samplepacs-")
            return Path(self._temporary_dir.name)
        self._storage_dir.mkdir(parents=True, exist_ok=True)
        return self._storage_dir

    def _remove_temporary_dir(self) -> None:
        if self._temporary_dir is not None:
            self._temporary_dir.cleanup()
            self._temporary_dir = None

    @property
    def _active_storage_dir(self) -> Path:
        if self._temporary_dir is not None:
            return Path(self._temporary_dir.name)
        if self._storage_dir is None:
            raise RuntimeError("SamplePacs has no storage folder before start()")
        return self._storage_dir

    def _load_index(self, paths: Iterable[Path]) -> None:
        index: dict[str, IndexedInstance] = {}
        for path in paths:
            instance = _read_header(path)
            if instance is not None:
                index[str(instance.header.SOPInstanceUID)] = instance
        with self._index_lock:
            self._index = index

    def _snapshot(self) -> list[IndexedInstance]:
        with self._index_lock:
            return list(self._index.values())

    # C-FIND

    def _handle_find(self, event: Event) -> Iterator[StatusAndDataset]:
        levels = FIND_MODELS[event.context.abstract_syntax]
        identifier = event.identifier
        if self._options.record_identifiers:
            self.find_identifiers.append(identifier)
        try:
            level = read_level(identifier, levels)
            check_unique_keys(identifier, level, levels, retrieve=False)
            check_find_quirks(identifier, level, levels, self._options)
        except IdentifierError as exc:
            LOGGER.debug("C-FIND from %s failed with 0xA900: %s", _requester(event), exc)
            yield FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return

        abort_after = self._options.find_abort_after
        limit = self._options.max_matches
        matches = find_matches(self._snapshot(), identifier, level, levels, self.ae_title)
        if level == STUDY_LEVEL and self._options.synthetic_matches:
            matches = itertools.chain(synthetic_study_matches(self._options.synthetic_matches), matches)
        for sent, response in enumerate(matches):
            if limit is not None and sent >= limit:
                LOGGER.debug("C-FIND: stopping at the limit of %d matches (fault)", limit)
                break
            if abort_after is not None and sent >= abort_after:
                LOGGER.debug("C-FIND: aborting the association after %d matches (fault)", sent)
                event.assoc.abort()
                return
            if _wait_unless_cancelled(event, self._options.find_delay):
                LOGGER.debug("C-FIND cancelled after %d matches", sent)
                self.find_cancels += 1
                yield CANCEL, None
                return
            for keyword in self._options.omit_match_keys:
                if keyword in response:
                    del response[keyword]
            yield PENDING, response

    # C-MOVE and C-GET

    def _handle_move(self, event: Event) -> Iterator[MoveYield]:
        # pynetdicom 3.0.4 expects, in this order: the destination (host, port,
        # kwargs for AE.associate), the number of sub-operations, then one
        # (status, dataset) per sub-operation.
        destination_ae = (event.move_destination or "").strip()
        address = self._move_destinations.get(destination_ae)
        if address is None:
            LOGGER.debug(
                "C-MOVE from %s failed with 0xA801: unknown Move Destination %r",
                _requester(event),
                destination_ae,
            )
            yield None, None  # pynetdicom sends 0xA801, Move Destination Unknown
            return

        levels = MOVE_MODELS[event.context.abstract_syntax]
        try:
            selection = self._select(event.identifier, levels)
        except IdentifierError as exc:
            LOGGER.debug("C-MOVE from %s failed with 0xA900: %s", _requester(event), exc)
            # NOTE: pynetdicom 3.0.4 sends no failure status before it has
            # associated with the destination. So the destination receives an
            # association without any C-STORE, and the response counts one
            # failed sub-operation.
            yield address[0], address[1], {"contexts": [build_context(Verification)]}
            yield 1
            yield MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return

        contexts = storage_contexts(selection)
        if self._options.omit_move_originator and selection:
            yield from self._move_without_originator(
                event, destination_ae, address, selection, contexts
            )
            return

        yield address[0], address[1], {"contexts": contexts}
        yield from self._sub_operations(event, selection, self._options.move_abort_after)

    def _move_without_originator(
        self,
        event: Event,
        destination_ae: str,
        address: tuple[str, int],
        selection: list[IndexedInstance],
        contexts: list[PresentationContext],
    ) -> Iterator[MoveYield]:
        """Run a C-MOVE whose C-STORE requests carry no Move Originator fields.

        pynetdicom's C-MOVE loop always sends the originator, and it sends a
        Pending response only after it stored a yielded dataset itself. So the
        loop is pointed at a relay server of this PACS on a free loopback
        port. The relay forwards each C-STORE over this PACS's own association
        to the real destination without the originator, and returns the
        destination's status. pynetdicom then counts the sub-operations and
        sends the Pending and final responses as usual.
        """
        target = self._associate_destination(event, destination_ae, address, contexts)
        if target is None:
            yield None, None  # pynetdicom sends the same 0xA801 when it can't associate
            return

        relay = _start_server(
            self._ae, (RELAY_HOST, 0), [(evt.EVT_C_STORE, _relay_store, [target])]
        )
        try:
            relay_host, relay_port = relay.server_address[:2]
            yield str(relay_host), int(relay_port), {"contexts": contexts}
            yield from self._sub_operations(event, selection, self._options.move_abort_after)
        finally:
            relay.shutdown()
            target.release()

    def _associate_destination(
        self,
        event: Event,
        destination_ae: str,
        address: tuple[str, int],
        contexts: list[PresentationContext],
    ) -> Association | None:
        """Return an association with the Move Destination, or None when it failed."""
        target = self._ae.associate(
            address[0], address[1], ae_title=destination_ae, contexts=contexts
        )
        if not target.is_established:
            LOGGER.debug(
                "C-MOVE from %s failed with 0xA801: association with %s at %s:%d failed",
                _requester(event),
                destination_ae,
                address[0],
                address[1],
            )
            return None
        return target

    def _handle_get(self, event: Event) -> Iterator[SubOperationYield]:
        levels = GET_MODELS[event.context.abstract_syntax]
        try:
            selection = self._select(event.identifier, levels)
        except IdentifierError as exc:
            LOGGER.debug("C-GET from %s failed with 0xA900: %s", _requester(event), exc)
            # pynetdicom 3.0.4 sends a failure status only inside the
            # sub-operation loop, so the response counts one failed sub-operation.
            yield 1
            yield GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        yield from self._sub_operations(event, selection, abort_after=None)

    def _select(self, identifier: Dataset, levels: Sequence[str]) -> list[IndexedInstance]:
        level = read_level(identifier, levels)
        check_unique_keys(identifier, level, levels, retrieve=True)
        return select_instances(self._snapshot(), identifier, level, levels)

    def _sub_operations(
        self, event: Event, selection: list[IndexedInstance], abort_after: int | None
    ) -> Iterator[SubOperationYield]:
        """Yield the sub-operation count, then each instance read from disk as it is sent."""
        yield len(selection)
        for done, instance in enumerate(selection):
            if abort_after is not None and done >= abort_after:
                LOGGER.debug(
                    "Aborting the requester's association after %d sub-operations (fault)", done
                )
                event.assoc.abort()
                return
            if _wait_unless_cancelled(event, self._options.store_delay):
                LOGGER.debug("Retrieval cancelled after %d sub-operations", done)
                yield CANCEL, None  # pynetdicom adds the counts and failed UIDs
                return
            yield PENDING, dcmread(instance.path)

    # C-STORE

    def _handle_store(self, event: Event) -> int:
        request = cast(C_STORE, event.request)
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        if not _UID_PATTERN.match(sop_instance_uid) or len(sop_instance_uid) > 64:
            LOGGER.debug(
                "C-STORE from %s failed: invalid SOP Instance UID %r",
                _requester(event),
                sop_instance_uid,
            )
            return STORE_CANNOT_UNDERSTAND

        target = self._active_storage_dir / f"{sop_instance_uid}.dcm"
        partial = target.with_name(f"{target.name}.tmp")
        try:
            # The bytes as received, behind a preamble and the file meta information.
            partial.write_bytes(event.encoded_dataset(include_meta=True))
            os.replace(partial, target)
        except OSError as exc:
            LOGGER.debug(
                "C-STORE from %s failed: writing %s failed: %s", _requester(event), target, exc
            )
            partial.unlink(missing_ok=True)
            return STORE_OUT_OF_RESOURCES

        instance = _read_header(target)
        if instance is None:
            target.unlink(missing_ok=True)
            return STORE_CANNOT_UNDERSTAND
        with self._index_lock:
            self._index[sop_instance_uid] = instance
        LOGGER.debug("C-STORE stored %s", target)
        return SUCCESS


def check_find_quirks(
    identifier: Dataset, level: str, levels: Sequence[str], options: FaultOptions
) -> None:
    """Raise IdentifierError for the keys that the quirk options make this PACS reject."""
    above = {keyword for upper in levels[: levels.index(level)] for keyword in _LEVEL_KEYS[upper]}
    for element in identifier:
        keyword = element.keyword
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = str(element.value or "") if element.VR != "SQ" else "sequence"
        if options.reject_universal_keys and element.VR in WILDCARD_VRS and not value.strip():
            raise IdentifierError(f"zero-length key {keyword} is not supported (fault)")
        if options.reject_date_ranges and element.VR in RANGE_VRS and any(m in value for m in "-*?"):
            raise IdentifierError(f"range or wild card in {keyword} is not supported (fault)")
        if options.reject_relational_keys and keyword in above:
            raise IdentifierError(f"{keyword} is above Query/Retrieve Level {level} (fault)")


def synthetic_study_matches(count: int) -> Iterator[Dataset]:
    """Yield `count` made-up STUDY-level matches with distinct Study Instance UIDs."""
    for number in range(count):
        match = Dataset()
        match.QueryRetrieveLevel = STUDY_LEVEL
        match.PatientID = f"SYNTH-{number}"
        match.StudyInstanceUID = f"2.25.{number + 1}"
        yield match


def storage_contexts(instances: Sequence[IndexedInstance]) -> list[PresentationContext]:
    """Build the presentation contexts for sending `instances` by C-STORE.

    Each SOP Class gets one context for Explicit and Implicit VR Little Endian,
    which pynetdicom converts uncompressed data to, and one more for each
    other transfer syntax its files use. Explicit VR Big Endian (retired) is
    never proposed.
    """
    syntaxes: dict[str, set[str]] = {}
    for instance in instances:
        sop_class = str(instance.header.SOPClassUID)
        syntaxes.setdefault(sop_class, set()).add(
            str(instance.header.file_meta.TransferSyntaxUID)
        )

    contexts = []
    for sop_class, found in syntaxes.items():
        contexts.append(build_context(sop_class, list(_UNCOMPRESSED_SYNTAXES)))
        for syntax in sorted(found - {*_UNCOMPRESSED_SYNTAXES, ExplicitVRBigEndian}):
            contexts.append(build_context(sop_class, syntax))

    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        # NOTE: the C-STORE sub-operations of SOP Classes beyond the limit
        # fail; a second association is not opened for them.
        LOGGER.debug(
            "Proposing only %d of %d presentation contexts",
            MAX_PRESENTATION_CONTEXTS,
            len(contexts),
        )
        contexts = contexts[:MAX_PRESENTATION_CONTEXTS]
    return contexts


def _ignore_role_selection(ae: AE) -> None:
    """Support the storage SOP Classes with default roles only, for the reject_role_selection fault.

    pynetdicom then sends no role selection reply and stays the SCP.
    """
    for context in AllStoragePresentationContexts:
        uid = str(context.abstract_syntax)
        ae.remove_supported_context(uid)
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)


def _start_server(
    ae: AE, address: tuple[str, int], handlers: list[EventHandlerType]
) -> ThreadedAssociationServer:
    server = ae.start_server(address, block=False, evt_handlers=handlers,
                             contexts=context_list(ae.supported_contexts))
    if server is None:  # start_server returns None only when it blocks
        raise RuntimeError(f"pynetdicom did not start a server on {address[0]}:{address[1]}")
    return server


def _read_header(path: Path) -> IndexedInstance | None:
    """Read the header of a DICOM file, or return None for a file that can't be served."""
    try:
        header = dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        LOGGER.debug("Skipping %s: %s", path, exc)
        return None

    missing = [
        keyword for keyword in ("SOPClassUID", "SOPInstanceUID") if keyword not in header
    ]
    if "TransferSyntaxUID" not in header.file_meta:
        missing.append("TransferSyntaxUID")
    if missing:
        LOGGER.debug("Skipping %s: missing %s", path, ", ".join(missing))
        return None
    return IndexedInstance(path=path, header=header)


def _wait_unless_cancelled(event: Event, seconds: float) -> bool:
    """Wait `seconds`, and return True as soon as a C-CANCEL for the request arrives.

    pynetdicom removes a C-CANCEL from its queue once event.is_cancelled has
    returned True, so the caller must act on the value returned here.
    """
    deadline = time.monotonic() + seconds
    while True:
        if event.is_cancelled:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(remaining, POLL_INTERVAL))


def _requester(event: Event) -> str:
    """Return the calling AE title of the association that `event` belongs to."""
    return str(event.assoc.requestor.ae_title)


def _reject_association(event: Event) -> None:
    """Reject the association for the reject_association fault.

    pynetdicom skips the negotiation of an association rejected in EVT_REQUESTED.
    """
    LOGGER.debug(
        "Rejecting the association from %s (fault)", _requester(event)
    )
    event.assoc.acse.send_reject(
        REJECT_PERMANENT, REJECT_SOURCE_SERVICE_USER, REJECT_CALLING_AE_NOT_RECOGNIZED
    )
    # send_reject only queues the A-ASSOCIATE-RJ. kill() waits until the DUL
    # has sent it, because otherwise pynetdicom closes the socket first and
    # the peer gets a bare disconnect. pynetdicom's own rejections also call kill().
    event.assoc.kill()


def _relay_store(event: Event, target: Association) -> int:
    """Forward one C-STORE to `target` without the Move Originator fields."""
    dataset = event.dataset
    dataset.file_meta = event.file_meta
    try:
        response = target.send_c_store(dataset, msg_id=event.message_id)
    except (RuntimeError, ValueError, AttributeError) as exc:
        LOGGER.debug("Relaying C-STORE to %s failed: %s", target.acceptor.ae_title, exc)
        return PROCESSING_FAILURE
    if "Status" not in response:
        # pynetdicom returns an empty dataset when the destination aborted,
        # the association timed out or the response was invalid.
        LOGGER.debug("Relaying C-STORE to %s failed: no response", target.acceptor.ae_title)
        return PROCESSING_FAILURE
    return int(response.Status)

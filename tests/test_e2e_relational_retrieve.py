"""Relational retrieval (PS3.4 C.4.2.2.1, C.5.2.1) from a workstation that negotiated it.

The workstation is a pynetdicom SCU that proposes SOP Class Extended
Negotiation with relational retrieval (one byte, 1) for the Study Root Move
and Get SOP Classes, and requests one instance at IMAGE level by its SOP
Instance UID alone. The SamplePacs peers accept hierarchical retrieves only:
"tuned" has needs_parent_uids, so the router fills in StudyInstanceUID and
SeriesInstanceUID from its routing table, "plain" has no router option, and
"getter" has needs_parent_uids and is retrieved from by C-GET.
The real peers, Orthanc 1.10.1 and dcmqrscp 3.6.7, have no router option
either, so they get the identifier as the workstation sent it. A second
router has needs_parent_uids for the same dcmqrscp archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import StoreSCP, run_findscu
from harness.orthanc import OrthancServer
from harness.ports import LOOPBACK, DicomNode, free_port
from harness.quirk_region import StudyRecipe, build_studies
from harness.retrieve_recording_pacs import RetrieveRecordingPacs
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from harness.waiting import wait_for
from yicrouter import status
from yicrouter.demo.samplepacs import FaultOptions
from yicrouter.demo.seed import SeedStudy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROUTER_AE = "YICROUTER"
TUNED_ROUTER_AE = "YICROUTER2"
WORKSTATION_AE = "WS1"
RELATIONAL = b"\x01"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]

# Several instances per study, so that a test can check that only the requested
# one moved, and so that tests that move instances of one study use different ones.
RECIPES = {
    "tuned": StudyRecipe("RELRET-TUNED", "Retrieve^Tuned", "20240110", "CT_small.dcm", 3),
    "plain": StudyRecipe("RELRET-PLAIN", "Retrieve^Plain", "20240210", "MR_small.dcm", 2),
    # JPEG 2000, so the router must propose that transfer syntax in its C-GET to the peer.
    "getter": StudyRecipe("RELRET-GETTER", "Retrieve^Getter", "20240215", "JPEG2000.dcm", 3),
    "orthanc": StudyRecipe("RELRET-ORTHANC", "Retrieve^Orthanc", "20240310", "CT_small.dcm", 2),
    "dcmqrscp": StudyRecipe("RELRET-DCMQR", "Retrieve^Dcmqr", "20240410", "MR_small.dcm", 2),
}


@dataclass
class Outcome:
    """The responses to one C-MOVE or C-GET, and the instances stored on the requester's association."""

    statuses: list[Dataset] = field(default_factory=list)
    stored: list[Dataset] = field(default_factory=list)

    @property
    def final(self) -> Dataset:
        assert self.statuses, "no response arrived"
        return self.statuses[-1]

    @property
    def final_status(self) -> int:
        assert "Status" in self.final, "the router aborted the association or it timed out"
        return int(self.final.Status)

    def count(self, kind: str) -> int:
        """Return Number of `kind` Sub-operations of the final response, or -1 when absent."""
        value = self.final.get(f"NumberOf{kind}Suboperations")
        return -1 if value is None else int(value)


@dataclass
class RetrieveRegion:
    router: RouterProcess
    workstation: StoreSCP
    tuned: RetrieveRecordingPacs
    plain: RetrieveRecordingPacs
    # needs_parent_uids, and the router retrieves from it by C-GET.
    getter: RetrieveRecordingPacs
    orthanc: OrthancServer
    dcmqrscp: DcmqrscpServer
    # A second router whose only peer is the dcmqrscp archive, with needs_parent_uids.
    dcmqrscp_tuned_router: RouterProcess
    studies: dict[str, SeedStudy]


def _extended_negotiation(sop_classes: tuple[str, ...]) -> list[SOPClassExtendedNegotiation]:
    items = []
    for sop_class in sop_classes:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = sop_class
        item.service_class_application_information = RELATIONAL
        items.append(item)
    return items


def _image_identifier(sop_instance_uid: str, parent_uids: dict[str, str] | None = None) -> Dataset:
    """Return an IMAGE-level identifier with SOPInstanceUID and only the given parent UIDs."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    for keyword, value in (parent_uids or {}).items():
        setattr(identifier, keyword, value)
    identifier.SOPInstanceUID = sop_instance_uid
    return identifier


def move(router: DicomNode, sop_instance_uid: str, relational: bool = True,
         parent_uids: dict[str, str] | None = None) -> Outcome:
    """Send one IMAGE-level Study Root C-MOVE to WS1, proposing relational retrieval when asked."""
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    # Relational retrieval is proposed for the Get SOP Class too, as a viewer that supports both does.
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = (StudyRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelGet)
    extended: list[Any] | None = list(_extended_negotiation(classes)) if relational else None
    assoc = ae.associate(LOOPBACK, router.port, ae_title=router.ae_title, ext_neg=extended)
    assert assoc.is_established, "the router rejected the C-MOVE association"
    outcome = Outcome()
    try:
        responses = assoc.send_c_move(_image_identifier(sop_instance_uid, parent_uids), WORKSTATION_AE,
                                      StudyRootQueryRetrieveInformationModelMove)
        for rsp, _identifier in responses:
            outcome.statuses.append(rsp)
    finally:
        if assoc.is_established:
            assoc.release()
    return outcome


def get(router: DicomNode, sop_instance_uid: str, relational: bool = True) -> Outcome:
    """Send one IMAGE-level Study Root C-GET, with the SCP role for CT and MR Image Storage."""
    outcome = Outcome()

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        outcome.stored.append(dataset)
        return status.SUCCESS

    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    storage = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)
    for sop_class in storage:
        ae.add_requested_context(sop_class, UNCOMPRESSED)
    negotiation: list[Any] = [build_role(sop_class, scp_role=True) for sop_class in storage]
    if relational:
        negotiation += _extended_negotiation((StudyRootQueryRetrieveInformationModelGet,))
    assoc = ae.associate(LOOPBACK, router.port, ae_title=router.ae_title, ext_neg=negotiation,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established, "the router rejected the C-GET association"
    try:
        for rsp, _identifier in assoc.send_c_get(_image_identifier(sop_instance_uid),
                                                 StudyRootQueryRetrieveInformationModelGet):
            outcome.statuses.append(rsp)
    finally:
        if assoc.is_established:
            assoc.release()
    return outcome


def find_instance(router: DicomNode, study: SeedStudy, index: int = 0) -> str:
    """Query one instance hierarchically with findscu, so that the routing table records it, and return its UID."""
    header = dcmread(study.files[index], stop_before_pixels=True)
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": str(header.SeriesInstanceUID),
        "SOPInstanceUID": str(header.SOPInstanceUID),
    }
    result = run_findscu(router, keys, calling_ae=WORKSTATION_AE)
    assert result.final_status == status.SUCCESS, result.describe()
    assert [str(ds.SOPInstanceUID) for ds in result.datasets] == [str(header.SOPInstanceUID)], result.describe()
    return str(header.SOPInstanceUID)


def _series_uid(study: SeedStudy, sop_instance_uid: str) -> str:
    for path in study.files:
        header = dcmread(path, stop_before_pixels=True)
        if str(header.SOPInstanceUID) == sop_instance_uid:
            return str(header.SeriesInstanceUID)
    raise KeyError(sop_instance_uid)


def _arrived(workstation: StoreSCP, sop_instance_uid: str) -> bool:
    return sop_instance_uid in workstation.received_datasets()


def _stop_all(*servers: Any) -> None:
    # Orthanc 1.10.1 takes about 3.5 s to shut down, so the servers stop in parallel.
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.stop(), servers))


def _main_router(work_dir: Path, node: DicomNode, fakes: dict[str, RetrieveRecordingPacs],
                 orthanc: OrthancServer, dcmqrscp: DcmqrscpServer, workstation: StoreSCP) -> RouterProcess:
    tuned, plain, getter = fakes["tuned"], fakes["plain"], fakes["getter"]
    return RouterProcess(
        work_dir / "router", ae_title=node.ae_title, port=node.port,
        peers=[
            PeerEntry("tuned", DicomNode(tuned.ae_title, tuned.port), find_deadline=10.0,
                      extra={"dimse_timeout": 10.0, "needs_parent_uids": True}),
            PeerEntry("plain", DicomNode(plain.ae_title, plain.port), find_deadline=10.0,
                      extra={"dimse_timeout": 10.0}),
            PeerEntry("getter", DicomNode(getter.ae_title, getter.port), find_deadline=10.0,
                      extra={"dimse_timeout": 10.0, "needs_parent_uids": True, "retrieve": "c-get"}),
            PeerEntry("orthanc", orthanc.node, find_deadline=10.0),
            PeerEntry("dcmqrscp", dcmqrscp.node, find_deadline=10.0),
        ],
        workstations=[WorkstationEntry(workstation.node)],
    )


def _dcmqrscp_tuned_router(work_dir: Path, node: DicomNode, dcmqrscp: DcmqrscpServer,
                           workstation: StoreSCP) -> RouterProcess:
    return RouterProcess(
        work_dir / "tuned-router", ae_title=node.ae_title, port=node.port,
        peers=[PeerEntry("dcmqrscp", dcmqrscp.node, find_deadline=10.0, extra={"needs_parent_uids": True})],
        workstations=[WorkstationEntry(workstation.node)],
    )


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetrieveRegion]:
    work_dir = tmp_path_factory.mktemp("relational-retrieve")
    studies = build_studies(work_dir / "seed", RECIPES, RECIPES)
    router_node = DicomNode(ROUTER_AE, free_port())
    tuned_router_node = DicomNode(TUNED_ROUTER_AE, free_port())

    faults = FaultOptions(record_identifiers=True)
    move_destinations = {ROUTER_AE: (LOOPBACK, router_node.port)}
    tuned = RetrieveRecordingPacs("TUNEDPACS", 0, studies["tuned"].files, move_destinations, options=faults)
    plain = RetrieveRecordingPacs("PLAINPACS", 0, studies["plain"].files, move_destinations, options=faults)
    getter = RetrieveRecordingPacs("GETTERPACS", 0, studies["getter"].files, move_destinations, options=faults)
    orthanc = OrthancServer("NORTH", "NORTHPACS", work_dir / "north", modalities={"router": router_node})
    dcmqrscp = DcmqrscpServer("EAST", "EASTPACS", work_dir / "east",
                              move_destinations={"router": router_node, "tuned_router": tuned_router_node})
    workstation = StoreSCP(WORKSTATION_AE, work_dir / "ws1")
    routers: list[RouterProcess] = []
    try:
        orthanc.start_process()
        dcmqrscp.start_process()
        tuned.start()
        plain.start()
        getter.start()
        workstation.start()
        orthanc.wait_until_ready()
        dcmqrscp.wait_until_ready()
        orthanc.seed(studies["orthanc"].files)
        dcmqrscp.seed(studies["dcmqrscp"].files)

        fakes = {"tuned": tuned, "plain": plain, "getter": getter}
        routers.append(_main_router(work_dir, router_node, fakes, orthanc, dcmqrscp, workstation))
        routers.append(_dcmqrscp_tuned_router(work_dir, tuned_router_node, dcmqrscp, workstation))
        for router in routers:
            router.start()
        yield RetrieveRegion(routers[0], workstation, tuned, plain, getter, orthanc, dcmqrscp, routers[1], studies)
    finally:
        _stop_all(orthanc, dcmqrscp, tuned, plain, getter, workstation, *routers)


# --- needs_parent_uids ------------------------------------------------------------------------


def test_relational_move_fills_parent_uids(region: RetrieveRegion) -> None:
    study = region.studies["tuned"]
    sop_instance_uid = find_instance(region.router.node, study)

    outcome = move(region.router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    assert outcome.count("Failed") == 0
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")
    other = study.sop_instance_uids[1]
    assert other not in region.workstation.received_datasets()
    sent = region.tuned.move_identifiers[-1]
    assert str(sent.QueryRetrieveLevel) == "IMAGE"
    assert str(sent.SOPInstanceUID) == sop_instance_uid
    assert str(sent.StudyInstanceUID) == study.study_uid
    assert str(sent.SeriesInstanceUID) == _series_uid(study, sop_instance_uid)


def test_relational_get_fills_parent_uids(region: RetrieveRegion) -> None:
    study = region.studies["tuned"]
    sop_instance_uid = find_instance(region.router.node, study, index=1)
    retrieves_before = len(region.tuned.retrieve_identifiers())

    outcome = get(region.router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    assert [str(ds.SOPInstanceUID) for ds in outcome.stored] == [sop_instance_uid]
    sent = region.tuned.retrieve_identifiers()[retrieves_before:]
    assert len(sent) == 1
    assert str(sent[0].StudyInstanceUID) == study.study_uid
    assert str(sent[0].SeriesInstanceUID) == _series_uid(study, sop_instance_uid)


def test_relational_move_locates_unseen_instance(region: RetrieveRegion) -> None:
    study = region.studies["tuned"]
    # No C-FIND through the router has returned this instance.
    sop_instance_uid = str(dcmread(study.files[2], stop_before_pixels=True).SOPInstanceUID)

    outcome = move(region.router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")
    # The targeted C-FIND found the instance at the tuned peer only, because the
    # plain peer rejects an IMAGE-level C-FIND without parent UIDs.
    located = region.router.wait_for_log(r"move_located[^\n]*").group(0)
    assert "found_at=['tuned']" in located
    sent = region.tuned.move_identifiers[-1]
    assert str(sent.SOPInstanceUID) == sop_instance_uid
    assert str(sent.StudyInstanceUID) == study.study_uid
    assert str(sent.SeriesInstanceUID) == _series_uid(study, sop_instance_uid)


def test_relational_move_by_peer_get(region: RetrieveRegion) -> None:
    study = region.studies["getter"]
    sop_instance_uid = find_instance(region.router.node, study)

    outcome = move(region.router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")
    sent = region.getter.get_identifiers[-1]
    assert str(sent.StudyInstanceUID) == study.study_uid
    assert str(sent.SeriesInstanceUID) == _series_uid(study, sop_instance_uid)


def test_peer_get_listing_has_parent_uids(region: RetrieveRegion) -> None:
    study = region.studies["getter"]
    sop_instance_uid = find_instance(region.router.node, study, index=1)
    finds_before = len(region.getter.find_identifiers)

    move(region.router.node, sop_instance_uid)

    # Before a C-GET the router lists the instances' SOP Classes with a C-FIND.
    # A peer with needs_parent_uids rejects that C-FIND without StudyInstanceUID
    # and SeriesInstanceUID, and then the router proposes its default SOP
    # Classes uncompressed only, so the JPEG 2000 instance can't be sent.
    listings = region.getter.find_identifiers[finds_before:]
    assert listings, "the router sent no C-FIND to list the instances"
    for listing in listings:
        assert str(listing.get("StudyInstanceUID", "")) == study.study_uid, listing
        assert str(listing.get("SeriesInstanceUID", "")) == _series_uid(study, sop_instance_uid), listing


def test_hierarchical_move_by_peer_get(region: RetrieveRegion) -> None:
    study = region.studies["getter"]
    sop_instance_uid = find_instance(region.router.node, study, index=2)
    parent_uids = {"StudyInstanceUID": study.study_uid,
                   "SeriesInstanceUID": _series_uid(study, sop_instance_uid)}

    outcome = move(region.router.node, sop_instance_uid, relational=False, parent_uids=parent_uids)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")


def test_image_move_without_negotiation_rejected(region: RetrieveRegion) -> None:
    study = region.studies["tuned"]
    sop_instance_uid = find_instance(region.router.node, study)
    finds_before = len(region.tuned.find_identifiers)
    retrieves_before = len(region.tuned.retrieve_identifiers())

    outcome = move(region.router.node, sop_instance_uid, relational=False)

    assert outcome.final_status == status.MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert len(region.tuned.find_identifiers) == finds_before
    assert len(region.tuned.retrieve_identifiers()) == retrieves_before


def test_image_get_without_negotiation_rejected(region: RetrieveRegion) -> None:
    study = region.studies["tuned"]
    sop_instance_uid = find_instance(region.router.node, study)
    retrieves_before = len(region.tuned.retrieve_identifiers())

    outcome = get(region.router.node, sop_instance_uid, relational=False)

    assert outcome.final_status == status.GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert outcome.stored == []
    assert len(region.tuned.retrieve_identifiers()) == retrieves_before


def test_relational_move_plain_peer_gets_known_parents(region: RetrieveRegion) -> None:
    study = region.studies["plain"]
    sop_instance_uid = find_instance(region.router.node, study)

    outcome = move(region.router.node, sop_instance_uid)

    # The C-FIND recorded the instance's parents, so even a peer without
    # needs_parent_uids gets them, and the hierarchical-only peer can serve it.
    sent = region.plain.move_identifiers[-1]
    assert sent.StudyInstanceUID == study.study_uid
    assert "SeriesInstanceUID" in sent
    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")


# --- Real peers without needs_parent_uids ------------------------------------------------------


def test_relational_move_orthanc(region: RetrieveRegion) -> None:
    sop_instance_uid = find_instance(region.router.node, region.studies["orthanc"])

    # Orthanc 1.10.1 looks an IMAGE-level C-MOVE up by SOPInstanceUID alone,
    # so the identifier without parent UIDs works as it is.
    outcome = move(region.router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")


def test_relational_move_dcmqrscp_known_parents(region: RetrieveRegion) -> None:
    sop_instance_uid = find_instance(region.router.node, region.studies["dcmqrscp"])

    outcome = move(region.router.node, sop_instance_uid)

    # dcmqrscp 3.6.7 retrieves hierarchically only: without StudyInstanceUID it
    # logs "hierarchicalCompare : No UID Key found at level 1" and responds
    # Success with no sub-operations. The router adds the parent UIDs that its
    # routing table recorded, so the instance arrives.
    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    assert "No UID Key found" not in region.dcmqrscp.log_text()
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")


def test_relational_move_dcmqrscp_needs_parent_uids(region: RetrieveRegion) -> None:
    tuned_router = region.dcmqrscp_tuned_router
    sop_instance_uid = find_instance(tuned_router.node, region.studies["dcmqrscp"], index=1)

    outcome = move(tuned_router.node, sop_instance_uid)

    assert outcome.final_status == status.SUCCESS
    assert outcome.count("Completed") == 1
    wait_for(lambda: _arrived(region.workstation, sop_instance_uid), timeout=10.0,
             message=f"instance {sop_instance_uid} did not arrive at {WORKSTATION_AE}")

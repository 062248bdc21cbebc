"""End-to-end transfer syntax handling: C-MOVE from an Orthanc peer through yicrouter to storescp.

Orthanc sends each instance in the transfer syntax it was stored in, because
the router's C-STORE SCP accepts every transfer syntax. The router then has
to decode or convert for destinations that accept less, and to spread many
SOP Classes over more than one association.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.values import convert_SQ

from harness.dcmtk import RetrieveResult, StoreSCP, run_movescu
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from harness.syntaxes import (
    PRIVATE_CREATOR,
    PRIVATE_CREATOR_TAG,
    PRIVATE_SEQUENCE_TAG,
    BuiltInstance,
    add_private_sequence,
    source_dataset,
    storage_sop_classes,
    write_instance,
)
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROUTER_AE = "YICROUTER"
# 70 SOP Classes need 140 presentation contexts, more than the 128 of one association.
MANY_SOP_CLASSES = 70

# storescp options for each destination (storescp 3.6.7 --help). Without
# +xa, storescp accepts only Explicit and Implicit VR Little Endian, and
# Explicit VR Big Endian.
DESTINATION_OPTIONS = {
    "UNCOMP": (),
    "IMPLICIT": ("+xi",),
    "ANYSOP": ("--promiscuous",),
}

COMPRESSED_SOURCES = [
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
]


@dataclass
class TransferRegion:
    router: RouterProcess
    peer: OrthancServer
    destinations: dict[str, DicomNode]
    # Test case name to the instances of its study, which all share one Study Instance UID.
    studies: dict[str, list[BuiltInstance]]


def _study(seed_dir: Path, case: str, datasets: list[Dataset]) -> list[BuiltInstance]:
    study_uid = generate_uid()
    instances = []
    for index, dataset in enumerate(datasets):
        dataset.PatientID = f"XFER-{case}"
        dataset.PatientName = "Transfer^Test"
        instances.append(write_instance(dataset, seed_dir / case / f"{index}.dcm", study_uid=study_uid))
    return instances


def _many_sop_classes() -> list[Dataset]:
    datasets = []
    for sop_class in storage_sop_classes(MANY_SOP_CLASSES):
        dataset = source_dataset("CT_small.dcm")
        dataset.SOPClassUID = sop_class
        datasets.append(dataset)
    return datasets


def _deflated_with_private_sequence() -> Dataset:
    dataset = source_dataset("image_dfl.dcm")
    add_private_sequence(dataset)
    return dataset


def _build_studies(seed_dir: Path) -> dict[str, list[BuiltInstance]]:
    studies = {name: _study(seed_dir, name, [source_dataset(name)]) for name in COMPRESSED_SOURCES}
    studies["deflated"] = _study(seed_dir, "deflated", [_deflated_with_private_sequence()])
    studies["bigendian"] = _study(seed_dir, "bigendian", [source_dataset("MR_small_bigendian.dcm")])
    # pylibjpeg cannot decode the scan header of pydicom's JPEG-lossy.dcm.
    studies["undecodable"] = _study(seed_dir, "undecodable", [source_dataset("JPEG-lossy.dcm")])
    studies["many"] = _study(seed_dir, "many", _many_sop_classes())
    return studies


@pytest.fixture(scope="module")
def transfer_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransferRegion]:
    """Start one Orthanc peer seeded with every test study, and a router configured with the destinations."""
    work_dir = tmp_path_factory.mktemp("transfer")
    studies = _build_studies(work_dir / "seed")
    router_node = DicomNode(ROUTER_AE, free_port())
    destinations = {name: DicomNode(name, free_port()) for name in DESTINATION_OPTIONS}
    peer = OrthancServer("XFER", "XFERPACS", work_dir / "orthanc", modalities={"router": router_node})
    router = RouterProcess(
        work_dir / "router", ae_title=ROUTER_AE, port=router_node.port,
        peers=[PeerEntry("xfer", peer.node, find_deadline=10.0)],
        workstations=[WorkstationEntry(node) for node in destinations.values()],
    )
    try:
        peer.start()
        peer.seed(instance.path for study in studies.values() for instance in study)
        router.start()
        yield TransferRegion(router, peer, destinations, studies)
    finally:
        exit_status = router.stop()
        peer.stop()
    assert exit_status == 0, f"the router exited with {exit_status}:\n{router.log_text()[-3000:]}"


@pytest.fixture
def start_destination(transfer_region: TransferRegion, tmp_path: Path) -> Iterator[Callable[[str], StoreSCP]]:
    """Factory: start the storescp of a destination named in DESTINATION_OPTIONS, stopped after the test."""
    started: list[StoreSCP] = []

    def start(name: str) -> StoreSCP:
        scp = StoreSCP(
            name, tmp_path / name.lower(), port=transfer_region.destinations[name].port,
            accept_all_transfer_syntaxes=False, extra_args=DESTINATION_OPTIONS[name],
        )
        started.append(scp)
        return scp.start()

    yield start
    for scp in started:
        scp.stop()


def _move(region: TransferRegion, case: str, destination: str) -> RetrieveResult:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": region.studies[case][0].study_instance_uid}
    return run_movescu(region.router.node, destination, keys, calling_ae=destination, timeout=120.0)


def _received_one(scp: StoreSCP, instance: BuiltInstance) -> Dataset:
    scp.wait_for_files(1)
    received = scp.received_datasets()
    assert list(received) == [instance.sop_instance_uid]
    return received[instance.sop_instance_uid]


@pytest.mark.parametrize("case", COMPRESSED_SOURCES)
def test_compressed_arrives_uncompressed(
    transfer_region: TransferRegion, start_destination: Callable[[str], StoreSCP], case: str
) -> None:
    destination = start_destination("UNCOMP")
    instance = transfer_region.studies[case][0]

    result = _move(transfer_region, case, "UNCOMP")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == 1, result.describe()
    received = _received_one(destination, instance)
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = dcmread(instance.path)
    assert numpy.array_equal(received.pixel_array, original.pixel_array)


@pytest.mark.parametrize(("destination_name", "transfer_syntax"), [
    ("IMPLICIT", ImplicitVRLittleEndian),
    ("UNCOMP", ExplicitVRLittleEndian),
])  # fmt: skip
def test_deflated_with_private_sequence(
    transfer_region: TransferRegion, start_destination: Callable[[str], StoreSCP],
    destination_name: str, transfer_syntax: str,
) -> None:
    destination = start_destination(destination_name)
    instance = transfer_region.studies["deflated"][0]

    result = _move(transfer_region, "deflated", destination_name)

    assert result.final_status == status.SUCCESS, result.describe()
    received = _received_one(destination, instance)
    assert received.file_meta.TransferSyntaxUID == transfer_syntax
    original = dcmread(instance.path)
    assert received.PixelData == original.PixelData
    assert received[PRIVATE_CREATOR_TAG].value == PRIVATE_CREATOR
    items = _private_sequence_items(received)
    assert len(items) == 1
    assert items[0].ImageComments == "private item"


def _private_sequence_items(received: Dataset) -> Sequence:
    """Return the items of the private sequence (0029,1010) in a file that storescp wrote.

    storescp writes explicit lengths, and pydicom reads a private element of
    defined length in an Implicit VR file as UN. Such an element must then be
    a sequence encoded in Implicit VR Little Endian.
    """
    element = received[PRIVATE_SEQUENCE_TAG]
    if received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian and element.VR == "UN":
        return convert_SQ(element.value, is_implicit_VR=True, is_little_endian=True)
    assert element.VR == "SQ"
    items: Sequence = element.value
    return items


def test_big_endian_arrives_little_endian(
    transfer_region: TransferRegion, start_destination: Callable[[str], StoreSCP]
) -> None:
    destination = start_destination("UNCOMP")
    instance = transfer_region.studies["bigendian"][0]

    result = _move(transfer_region, "bigendian", "UNCOMP")

    assert result.final_status == status.SUCCESS, result.describe()
    received = _received_one(destination, instance)
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    little = source_dataset("MR_small.dcm")
    assert received.PixelData == little.PixelData
    assert numpy.array_equal(received.pixel_array, little.pixel_array)


def test_undecodable_counts_failed(
    transfer_region: TransferRegion, start_destination: Callable[[str], StoreSCP]
) -> None:
    destination = start_destination("UNCOMP")
    instance = transfer_region.studies["undecodable"][0]

    result = _move(transfer_region, "undecodable", "UNCOMP")

    assert result.failed == 1, result.describe()
    assert result.completed == 0, result.describe()
    transfer_region.router.wait_for_log(rf"instance_unsendable.*sop_instance_uid={re.escape(instance.sop_instance_uid)}")
    assert destination.received() == []


def test_many_sop_classes_use_two_associations(
    transfer_region: TransferRegion, start_destination: Callable[[str], StoreSCP]
) -> None:
    destination = start_destination("ANYSOP")
    study = transfer_region.studies["many"]

    result = _move(transfer_region, "many", "ANYSOP")

    assert result.final_status == status.SUCCESS, result.describe()
    assert result.completed == MANY_SOP_CLASSES, result.describe()
    destination.wait_for_files(MANY_SOP_CLASSES)
    received = destination.received_datasets()
    assert sorted(received) == sorted(instance.sop_instance_uid for instance in study)
    assert {str(dataset.SOPClassUID) for dataset in received.values()} == set(storage_sop_classes(MANY_SOP_CLASSES))
    added = transfer_region.router.wait_for_log(
        r"destination_association_added.*association_number=2.*contexts=(\d+).*destination_ae_title=ANYSOP"
    )
    assert int(added.group(1)) <= 128

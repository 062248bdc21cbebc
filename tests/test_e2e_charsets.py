"""Specific Character Set through the router, between DCMTK findscu and real peers.

Peers:
- ARCHIVE, a DCMTK dcmqrscp. It returns each stored value with the stored
  (0008,0005): ISO_IR 100, ISO_IR 192, ISO 2022 IR 87, ISO_IR 144, and none
  at all for a file whose Latin-1 bytes declare no character set.
- UTF8, an Orthanc whose DefaultEncoding is Utf8, so its matches declare ISO_IR 192.
- LATIN1, a pynetdicom fake that the router knows can match only Latin-1
  (query_charset ISO_IR 100). It records the raw bytes of each request.
- PLAIN, a pynetdicom fake with default_charset ISO_IR 192, which records
  its requests too and matches Person Name component groups one by one. It
  returns one study's UTF-8 bytes without (0008,0005).

Each workstation request is a query file written by pydicom, so its bytes
and (0008,0005) are known. The response files that findscu writes are read
back undecoded to check the bytes that the router sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import PersonName

from harness.dcmqrscp import DcmqrscpServer
from harness.dcmtk import FindResult, run_findscu
from harness.derived_files import derive_file, source_path
from harness.orthanc import OrthancServer
from harness.ports import DicomNode, free_port
from harness.recording_peer import RecordingFindPeer, study_record
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROUTER_AE = "YICROUTER"
PATIENT_NAME_TAG = 0x00100010
WANG = "Wang^XiaoDong=王^小東"
YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"
BUC = "Buc^Jérôme"
MUELLER = "Müller^Hans"
IVANOV = "Иванов^Иван"
DVORAK = "Dvořák^Jiří"


@dataclass
class CharsetRegion:
    router: RouterProcess
    latin1: RecordingFindPeer
    plain: RecordingFindPeer
    work_dir: Path


@pytest.fixture(scope="module")
def charset_region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CharsetRegion]:
    work_dir = tmp_path_factory.mktemp("charsets")
    seeds = work_dir / "seeds"
    mueller = derive_file("chrGerm.dcm", seeds / "mueller.dcm", without_charset=True,
                          PatientName=MUELLER, PatientID="C01")
    ivanov = derive_file("chrRuss.dcm", seeds / "ivanov.dcm", PatientName=IVANOV, PatientID="C02")
    wang, yamada, buc = (source_path(name) for name in ("chrX1.dcm", "chrH31.dcm", "chrFren.dcm"))

    router_node = DicomNode(ROUTER_AE, free_port())
    ws1 = DicomNode("WS1", free_port())
    known = {"router": router_node, "ws1": ws1}
    archive = DcmqrscpServer("ARCHIVE", "ARCHIVEPACS", work_dir / "archive", move_destinations=known)
    utf8 = OrthancServer("UTF8", "UTF8PACS", work_dir / "utf8", modalities=known,
                         extra_config={"DefaultEncoding": "Utf8"})
    latin1 = RecordingFindPeer("LATIN1PACS", [])
    plain = RecordingFindPeer("PLAINPACS", [study_record(wang), undeclared_utf8_record()])
    router: RouterProcess | None = None
    try:
        for server in (archive, utf8):
            server.start_process()
        latin1.start()
        plain.start()
        archive.wait_until_ready()
        utf8.wait_until_ready()
        archive.seed([wang, yamada, buc, *mueller])
        utf8.seed([wang, *ivanov])
        router = RouterProcess(
            work_dir / "router", ae_title=ROUTER_AE, port=router_node.port,
            peers=[
                PeerEntry("archive", archive.node, find_deadline=10.0,
                          extra={"default_charset": "ISO_IR 100"}),
                PeerEntry("utf8", utf8.node, find_deadline=10.0),
                PeerEntry("latin1", latin1.node, find_deadline=10.0,
                          extra={"query_charset": "ISO_IR 100", "default_charset": "ISO_IR 100"}),
                PeerEntry("plain", plain.node, find_deadline=10.0,
                          extra={"default_charset": "ISO_IR 192"}),
            ],
            workstations=[WorkstationEntry(ws1)],
        )
        router.start()
        yield CharsetRegion(router, latin1, plain, work_dir)
    finally:
        if router is not None:
            router.stop()
        latin1.stop()
        plain.stop()
        archive.stop()
        utf8.stop()


def undeclared_utf8_record() -> Dataset:
    """Return a study record whose Patient's Name is UTF-8 bytes with no (0008,0005).

    pydicom keeps the bytes that a PersonName was built from and writes them
    back unchanged while the dataset declares no character set.
    """
    record = Dataset()
    record.PatientID = "C03"
    record.PatientName = PersonName(DVORAK.encode("utf-8"))
    record.StudyInstanceUID = generate_uid()
    record.ModalitiesInStudy = "OT"
    return record


def find(region: CharsetRegion, tmp_path: Path, charset: list[str], **keys: str) -> FindResult:
    """Send a STUDY-level C-FIND as WS1 from a query file in `charset` and return the responses."""
    identifier = Dataset()
    if charset:
        identifier.SpecificCharacterSet = charset[0] if len(charset) == 1 else charset
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    identifier.PatientName = ""
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    query_file = tmp_path / f"query-{len(list(tmp_path.glob('query-*')))}.dcm"
    identifier.save_as(query_file, implicit_vr=False, little_endian=True)
    result = run_findscu(region.router.node, query_file=query_file, calling_ae="WS1", timeout=30.0,
                         output_dir=tmp_path / f"responses-{query_file.stem}")
    assert result.final_status == status.SUCCESS, result.describe()
    return result


def name_bytes(response: Dataset) -> bytes:
    """Return the Patient's Name bytes of a response file as the router sent them."""
    value = response.get_item(PATIENT_NAME_TAG).value
    assert isinstance(value, bytes)
    return value.rstrip(b" ")


def charset_of(response: Dataset) -> list[str]:
    if "SpecificCharacterSet" not in response:
        return []
    value = response.SpecificCharacterSet
    return [value] if isinstance(value, str) else list(value)


def by_patient_id(result: FindResult) -> dict[str, Dataset]:
    return {str(response.PatientID): response for response in result.datasets}


# --- character sets of the peers' matches -----------------------------------------


def test_every_peer_charset_decoded(charset_region: CharsetRegion, tmp_path: Path) -> None:
    result = find(charset_region, tmp_path, ["ISO_IR 192"])

    responses = by_patient_id(result)
    names = {patient_id: name_bytes(response).decode("utf-8") for patient_id, response in responses.items()}
    assert names == {
        "X1EXAMPLE": WANG, "H31EXAMPLE": YAMADA, "SCSFREN": BUC, "C01": MUELLER, "C02": IVANOV,
        "C03": DVORAK,
    }
    for response in responses.values():
        assert charset_of(response) == ["ISO_IR 192"]


def test_undeclared_latin1_peer(charset_region: CharsetRegion, tmp_path: Path) -> None:
    """dcmqrscp returns the Latin-1 bytes without (0008,0005); the peer's default decodes them."""
    result = find(charset_region, tmp_path, ["ISO_IR 100"], PatientID="C01")

    assert len(result.datasets) == 1
    response = result.datasets[0]
    assert name_bytes(response) == b"M\xfcller^Hans"
    assert charset_of(response) == ["ISO_IR 100"]


def test_undeclared_utf8_peer(charset_region: CharsetRegion, tmp_path: Path) -> None:
    """The plain peer's undeclared UTF-8 bytes are read with its default, not as Latin-1."""
    result = find(charset_region, tmp_path, ["ISO_IR 192"], PatientID="C03")

    assert len(result.datasets) == 1
    assert name_bytes(result.datasets[0]) == DVORAK.encode("utf-8")
    assert charset_of(result.datasets[0]) == ["ISO_IR 192"]


def test_iso_2022_response_bytes(charset_region: CharsetRegion, tmp_path: Path) -> None:
    result = find(charset_region, tmp_path, ["", "ISO 2022 IR 87"], PatientID="H31EXAMPLE")

    assert len(result.datasets) == 1
    response = result.datasets[0]
    expected = dcmread(source_path("chrH31.dcm")).get_item(PATIENT_NAME_TAG).value.rstrip(b" ")
    assert name_bytes(response) == expected
    assert charset_of(response) == ["", "ISO 2022 IR 87"]


def test_utf8_when_request_charset_cannot(charset_region: CharsetRegion, tmp_path: Path) -> None:
    result = find(charset_region, tmp_path, ["", "ISO 2022 IR 87"], PatientID="SCSFREN")

    assert len(result.datasets) == 1
    assert charset_of(result.datasets[0]) == ["ISO_IR 192"]
    assert name_bytes(result.datasets[0]) == BUC.encode("utf-8")


def test_default_repertoire_request(charset_region: CharsetRegion, tmp_path: Path) -> None:
    """A request without (0008,0005) still gets every character, declared as ISO_IR 192."""
    result = find(charset_region, tmp_path, [], PatientID="SCSFREN")

    assert len(result.datasets) == 1
    assert charset_of(result.datasets[0]) == ["ISO_IR 192"]
    assert name_bytes(result.datasets[0]) == BUC.encode("utf-8")


# --- Person Name keys with component groups ---------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [("Wang", []), ("*XiaoDong*", ["X1EXAMPLE"]), ("=王*", ["X1EXAMPLE"]), ("Wang^XiaoDong", ["X1EXAMPLE"])],
)
def test_component_group_keys(
    charset_region: CharsetRegion, tmp_path: Path, key: str, expected: list[str]
) -> None:
    result = find(charset_region, tmp_path, ["ISO_IR 192"], PatientName=key)

    assert sorted(str(response.PatientID) for response in result.datasets) == expected
    for response in result.datasets:
        assert name_bytes(response).decode("utf-8") == WANG


def test_ideographic_key_reaches_peers(charset_region: CharsetRegion, tmp_path: Path) -> None:
    """The plain peer gets the key unchanged; the Latin-1 peer gets "?" for each character."""
    plain_before = len(charset_region.plain.recorded())
    latin1_before = len(charset_region.latin1.recorded())

    find(charset_region, tmp_path, ["ISO_IR 192"], PatientName="=王*")

    plain_request = charset_region.plain.recorded()[plain_before]
    assert plain_request.element_bytes("PatientName") == "=王*".encode("utf-8")
    assert plain_request.element_bytes("SpecificCharacterSet") == b"ISO_IR 192"
    latin1_request = charset_region.latin1.recorded()[latin1_before]
    assert latin1_request.element_bytes("PatientName") == b"=?*"
    assert latin1_request.element_bytes("SpecificCharacterSet") is None


def test_cyrillic_key_to_latin1_peer(charset_region: CharsetRegion, tmp_path: Path) -> None:
    plain_before = len(charset_region.plain.recorded())
    latin1_before = len(charset_region.latin1.recorded())

    result = find(charset_region, tmp_path, ["ISO_IR 144"], PatientName="Иванов*")

    latin1_request = charset_region.latin1.recorded()[latin1_before]
    assert latin1_request.element_bytes("PatientName") == b"??????*"
    assert latin1_request.element_bytes("SpecificCharacterSet") is None
    plain_request = charset_region.plain.recorded()[plain_before]
    assert plain_request.element_bytes("PatientName") == "Иванов*".encode("iso8859_5")
    assert plain_request.element_bytes("SpecificCharacterSet") == b"ISO_IR 144"

    assert [str(response.PatientID) for response in result.datasets] == ["C02"]
    assert name_bytes(result.datasets[0]) == IVANOV.encode("iso8859_5")
    assert charset_of(result.datasets[0]) == ["ISO_IR 144"]


def test_ascii_key_sends_no_charset(charset_region: CharsetRegion, tmp_path: Path) -> None:
    before = len(charset_region.plain.recorded())

    find(charset_region, tmp_path, ["ISO_IR 100"], PatientID="C01")

    request = charset_region.plain.recorded()[before]
    assert request.element_bytes("SpecificCharacterSet") is None
    assert request.element_bytes("PatientID") == b"C01"

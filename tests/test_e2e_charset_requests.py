"""Specific Character Set (0008,0005) in the router's C-FIND requests to a peer.

The peer stores Müller^Hans in ISO_IR 100 and Wang^XiaoDong=王^小東 in
ISO_IR 192. It always returns each record's stored bytes, but declares
(0008,0005) in a match only when the request carried (0008,0005). DICOM
has no character set negotiation, so the router must either send
(0008,0005) with every request to such a peer (always_send_charset) or know
the peer's character set (default_charset).

Three routers share that one peer, each with other options for it. The
workstation is DCMTK findscu, which sends a plain ASCII key such as
PatientName=M* from a query file and writes each response identifier to a
file that is read back undecoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from harness.charset_echo_peer import CharsetEchoPeer
from harness.derived_files import derive_file
from harness.dcmtk import run_findscu
from harness.ports import DicomNode, free_port
from harness.recording_peer import RecordedRequest, study_record
from harness.router import PeerEntry, RouterProcess, WorkstationEntry
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKSTATION_AE = "WS1"
PATIENT_NAME_TAG = 0x00100010
MUELLER = "Müller^Hans"
MUELLER_LATIN1 = MUELLER.encode("latin-1")
MUELLER_UTF8 = MUELLER.encode("utf-8")
# Patient's Name of pydicom's chrX1.dcm, which declares ISO_IR 192.
WANG = "Wang^XiaoDong=王^小東"

# Router name to the [[peer]] options of the one peer.
ROUTER_OPTIONS: dict[str, dict[str, Any]] = {
    "always": {"always_send_charset": True, "query_charset": "ISO_IR 100"},
    "bare": {"default_charset": ""},
    "latin1": {"default_charset": "ISO_IR 100"},
}


@dataclass
class CharsetRequestRegion:
    peer: CharsetEchoPeer
    routers: dict[str, RouterProcess]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CharsetRequestRegion]:
    work_dir = tmp_path_factory.mktemp("charset-requests")
    # chrGerm.dcm declares ISO_IR 100, so the derived record does too.
    mueller = derive_file("chrGerm.dcm", work_dir / "seed" / "mueller.dcm", PatientName=MUELLER, PatientID="CSR01")
    wang = derive_file("chrX1.dcm", work_dir / "seed" / "wang.dcm", PatientID="CSR02")
    peer = CharsetEchoPeer("ECHOPACS", [study_record(path) for path in [*mueller, *wang]])
    routers: dict[str, RouterProcess] = {}
    try:
        peer.start()
        for name, options in ROUTER_OPTIONS.items():
            routers[name] = RouterProcess(
                work_dir / f"router-{name}", ae_title="YICROUTER",
                peers=[PeerEntry("echo", peer.node, find_deadline=10.0, extra=options)],
                workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))],
            ).start()
        yield CharsetRequestRegion(peer, routers)
    finally:
        for router in routers.values():
            router.stop()
        peer.stop()


def find(router: RouterProcess, work_dir: Path, charset: str | None = None, name_key: str = "M*") -> list[Dataset]:
    """Send a STUDY-level C-FIND on PatientName with findscu as WS1 and return the response files.

    The query file carries (0008,0005) only when `charset` is given. findscu
    writes each response identifier as it arrived, and the returned datasets
    are read lazily, so get_item returns the router's bytes.
    """
    identifier = Dataset()
    if charset is not None:
        identifier.SpecificCharacterSet = charset
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = ""
    identifier.PatientName = name_key
    work_dir.mkdir(parents=True, exist_ok=True)
    query_file = work_dir / "query.dcm"
    identifier.save_as(query_file, implicit_vr=False, little_endian=True)
    result = run_findscu(router.node, query_file=query_file, calling_ae=WORKSTATION_AE,
                         output_dir=work_dir / "responses")
    assert result.final_status == status.SUCCESS, result.describe()
    return result.datasets


def name_bytes(match: Dataset) -> bytes:
    """Return the Patient's Name bytes of a response as the router sent them, without padding."""
    value = match.get_item(PATIENT_NAME_TAG).value
    assert isinstance(value, bytes)
    return value.rstrip(b" ")


def charset_of(match: Dataset) -> str | None:
    return str(match.SpecificCharacterSet) if "SpecificCharacterSet" in match else None


def last_request(peer: CharsetEchoPeer, before: int) -> RecordedRequest:
    requests = peer.recorded()[before:]
    assert len(requests) == 1, f"the peer received {len(requests)} requests, expected 1"
    return requests[0]


# --- always_send_charset with query_charset ISO_IR 100 -----------------------------


def test_always_send_charset_name_decoded(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["always"], tmp_path)

    request = last_request(region.peer, before)
    assert request.element_bytes("SpecificCharacterSet") == b"ISO_IR 100"
    assert request.element_bytes("PatientName") == b"M*"
    assert len(matches) == 1
    match = matches[0]
    # The request declared no character set and the name is not ASCII, so the router sends UTF-8.
    assert name_bytes(match) == MUELLER_UTF8
    assert charset_of(match) == "ISO_IR 192"
    assert str(match.PatientName) == MUELLER


def test_always_send_charset_latin1_request(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["always"], tmp_path, charset="ISO_IR 100")

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") == b"ISO_IR 100"
    assert len(matches) == 1
    assert name_bytes(matches[0]) == MUELLER_LATIN1
    assert charset_of(matches[0]) == "ISO_IR 100"


def test_always_send_charset_utf8_record(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["always"], tmp_path, name_key="W*")

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") == b"ISO_IR 100"
    assert len(matches) == 1
    # The peer declares the record's own ISO_IR 192, so its bytes are read right.
    assert name_bytes(matches[0]) == WANG.encode("utf-8")
    assert charset_of(matches[0]) == "ISO_IR 192"


# --- no always_send_charset ---------------------------------------------------------


def test_default_repertoire_peer_latin1_bytes(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["bare"], tmp_path)

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") is None
    assert len(matches) == 1
    # The peer's b"\xfc" is not in the default repertoire that default_charset ""
    # names. The router neither rejects nor replaces it: pydicom 3.0.2 reads the
    # default repertoire as Latin-1, so these Latin-1 bytes arrive right, in UTF-8.
    assert name_bytes(matches[0]) == MUELLER_UTF8
    assert charset_of(matches[0]) == "ISO_IR 192"
    # The log names, once, the peer that needs default_charset.
    region.routers["bare"].wait_for_log(r"peer_charset_undeclared")
    assert region.routers["bare"].log_text().count("peer_charset_undeclared") == 1


def test_default_repertoire_peer_utf8_bytes(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["bare"], tmp_path, name_key="W*")

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") is None
    assert len(matches) == 1
    # The same Latin-1 reading turns the peer's undeclared UTF-8 bytes into
    # other characters, which the router then sends on as UTF-8.
    assert name_bytes(matches[0]) == WANG.encode("utf-8").decode("latin-1").encode("utf-8")
    assert charset_of(matches[0]) == "ISO_IR 192"


def test_default_charset_latin1_name_decoded(region: CharsetRequestRegion, tmp_path: Path) -> None:
    before = len(region.peer.recorded())

    matches = find(region.routers["latin1"], tmp_path)

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") is None
    assert len(matches) == 1
    match = matches[0]
    assert name_bytes(match) == MUELLER_UTF8
    assert charset_of(match) == "ISO_IR 192"
    assert str(match.PatientName) == MUELLER
    # NOTE: ISO_IR 100 is also how pydicom 3.0.2 reads undeclared bytes for
    # default_charset "", so this outcome alone can't tell the two apart.


def test_ascii_request_charset_not_forwarded(region: CharsetRequestRegion, tmp_path: Path) -> None:
    """Without always_send_charset the router drops an ASCII request's (0008,0005) and reads the peer's bytes with default_charset."""
    before = len(region.peer.recorded())

    matches = find(region.routers["latin1"], tmp_path, charset="ISO_IR 100")

    assert last_request(region.peer, before).element_bytes("SpecificCharacterSet") is None
    assert len(matches) == 1
    assert name_bytes(matches[0]) == MUELLER_LATIN1
    assert charset_of(matches[0]) == "ISO_IR 100"

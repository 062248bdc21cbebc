"""Specific Character Set handling, checked on the bytes that pynetdicom sends and receives.

pynetdicom's own dsutils.encode and dsutils.decode turn identifiers into the
bytes of a P-DATA value and back, so these tests see what goes on the wire.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from yicrouter.charsets import charset_terms, decode_match, encode_request, encode_response
from yicrouter.config import PeerSettings

PATIENT_NAME_TAG = 0x00100010
ESCAPE_TO_ASCII = b"\x1b(B"


def peer(**options: object) -> PeerSettings:
    return PeerSettings(name="peer", ae_title="PEER", host="127.0.0.1", port=104, **options)  # type: ignore[arg-type]


def on_the_wire(identifier: Dataset) -> Dataset:
    """Encode `identifier` as pynetdicom does for a DIMSE message, and decode it again."""
    encoded = encode(identifier, True, True)
    assert encoded is not None
    return decode(BytesIO(encoded), True, True)


def raw_bytes(identifier: Dataset, tag: int) -> bytes:
    """Return the bytes of one element as pydicom read them, before any decoding."""
    value = identifier.get_item(tag).value
    assert isinstance(value, bytes)
    return value.rstrip(b" ")


def charset_file(name: str) -> Dataset:
    return dcmread(Path(get_charset_files(name)[0]))


def match_from_file(name: str, keep_charset: bool = True) -> Dataset:
    """Build a match with the raw Patient's Name bytes and (0008,0005) of a pydicom charset file."""
    source = charset_file(name)
    match = Dataset()
    if keep_charset:
        match.add(source.get_item(0x00080005))
    match.add(source.get_item(PATIENT_NAME_TAG))
    match.add(source.get_item(0x0020000D))
    return on_the_wire(match)


def latin1_match_without_charset() -> Dataset:
    match = Dataset()
    match.PatientID = "C01"
    match.PatientName = "PLACEHOLDER"
    wire = encode(match, True, True)
    assert wire is not None
    wire = wire.replace(b"PLACEHOLDER ", b"M\xfcller^Hans ")
    return decode(BytesIO(wire), True, True)


# --- decode_match -----------------------------------------------------------------


def test_decode_uses_peer_default() -> None:
    decoded = decode_match(peer(default_charset="ISO_IR 100"), latin1_match_without_charset())
    assert str(decoded.PatientName) == "Müller^Hans"
    assert decoded.SpecificCharacterSet == "ISO_IR 100"


def test_decode_rereads_accessed_value() -> None:
    """pydicom reads an undeclared value as Latin-1 when it is accessed; the peer's default wins."""
    match = Dataset()
    match.PatientName = "PLACEHOLDER"
    wire = encode(match, True, True)
    assert wire is not None
    wire = wire.replace(b"\x0c\x00\x00\x00PLACEHOLDER ", b"\x0c\x00\x00\x00" + "Dvořák^Jí".encode("utf-8"))
    received = decode(BytesIO(wire), True, True)
    assert str(received.PatientName) != "Dvořák^Jí"

    decoded = decode_match(peer(default_charset="ISO_IR 192"), received)
    assert str(decoded.PatientName) == "Dvořák^Jí"


def test_decode_prefers_declared_charset() -> None:
    decoded = decode_match(peer(default_charset="ISO_IR 100"), match_from_file("chrX1.dcm"))
    assert str(decoded.PatientName) == "Wang^XiaoDong=王^小東"
    assert decoded.SpecificCharacterSet == "ISO_IR 192"


def test_decode_iso_2022_ir_87() -> None:
    decoded = decode_match(peer(), match_from_file("chrH31.dcm"))
    assert str(decoded.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_decode_sequence_items() -> None:
    match = Dataset()
    match.SpecificCharacterSet = "ISO_IR 144"
    item = Dataset()
    item.RequestedProcedureDescription = "Рентген"
    match.RequestAttributesSequence = [item]
    decoded = decode_match(peer(default_charset="ISO_IR 100"), on_the_wire(match))
    assert decoded.RequestAttributesSequence[0].RequestedProcedureDescription == "Рентген"


def test_decode_drops_original_bytes() -> None:
    """The decoded match contains str values only, so a response re-encodes instead of copying the peer's bytes."""
    decoded = decode_match(peer(), match_from_file("chrH31.dcm"))
    assert isinstance(decoded.PatientName.original_string, (bytes, type(None)))
    response = encode_response(decoded, ["ISO_IR 192"])
    wire = on_the_wire(response)
    assert raw_bytes(wire, PATIENT_NAME_TAG) == "Yamada^Tarou=山田^太郎=やまだ^たろう".encode("utf-8")


# --- encode_request ---------------------------------------------------------------


def cyrillic_request() -> Dataset:
    request = Dataset()
    request.SpecificCharacterSet = "ISO_IR 144"
    request.QueryRetrieveLevel = "STUDY"
    request.PatientName = "Иванов*"
    request.StudyInstanceUID = ""
    return request


def test_request_gets_wildcards_for_latin1_peer() -> None:
    sent = on_the_wire(encode_request(peer(query_charset="ISO_IR 100"), cyrillic_request()))
    assert raw_bytes(sent, PATIENT_NAME_TAG) == b"??????*"
    assert "SpecificCharacterSet" not in sent


def test_request_keeps_encodable_characters() -> None:
    request = cyrillic_request()
    request.PatientName = "Müller-Иванов*"
    sent = on_the_wire(encode_request(peer(query_charset="ISO_IR 100"), request))
    assert raw_bytes(sent, PATIENT_NAME_TAG) == b"M\xfcller-??????*"
    assert sent.SpecificCharacterSet == "ISO_IR 100"


def test_request_unchanged_without_query_charset() -> None:
    sent = on_the_wire(encode_request(peer(), cyrillic_request()))
    assert raw_bytes(sent, PATIENT_NAME_TAG) == "Иванов*".encode("iso8859_5")
    assert sent.SpecificCharacterSet == "ISO_IR 144"


def test_request_ascii_keys_without_charset() -> None:
    request = cyrillic_request()
    request.PatientName = "Ivanov*"
    assert "SpecificCharacterSet" not in encode_request(peer(), request)


def test_request_always_send_charset() -> None:
    request = cyrillic_request()
    request.PatientName = "Ivanov*"
    sent = encode_request(peer(always_send_charset=True, query_charset="ISO_IR 100"), request)
    assert sent.SpecificCharacterSet == "ISO_IR 100"
    del request.SpecificCharacterSet
    assert encode_request(peer(always_send_charset=True), request).SpecificCharacterSet == "ISO_IR 192"


def test_request_iso_2022_groups() -> None:
    """Ideographic characters reach an ISO 2022 IR 87 peer with escapes around each group."""
    request = Dataset()
    request.SpecificCharacterSet = "ISO_IR 192"
    request.PatientName = "=山田^太郎"
    sent = encode_request(peer(query_charset="\\ISO 2022 IR 87"), request)
    assert list(sent.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert raw_bytes(on_the_wire(sent), PATIENT_NAME_TAG) == b"=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"


def test_request_leaves_workstation_copy_alone() -> None:
    request = cyrillic_request()
    encode_request(peer(query_charset="ISO_IR 100"), request)
    assert request.PatientName == "Иванов*"
    assert request.SpecificCharacterSet == "ISO_IR 144"


# --- encode_response --------------------------------------------------------------


def response_with(name: str) -> Dataset:
    response = Dataset()
    response.QueryRetrieveLevel = "STUDY"
    response.PatientName = name
    response.StudyInstanceUID = "1.2.3"
    return response


def test_response_iso_2022_bytes_match_standard_example() -> None:
    """The bytes equal those of pydicom's Japanese example file chrH31.dcm."""
    response = encode_response(response_with("Yamada^Tarou=山田^太郎=やまだ^たろう"), ["", "ISO 2022 IR 87"])
    sent = raw_bytes(on_the_wire(response), PATIENT_NAME_TAG)
    expected = raw_bytes(charset_file("chrH31.dcm"), PATIENT_NAME_TAG)
    assert sent == expected
    assert list(response.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]


def test_response_iso_2022_returns_to_ascii() -> None:
    """PS3.5 6.2.1.2: the value switches back to ASCII before each "^" and "="."""
    response = encode_response(response_with("Wang^XiaoDong=王^小東"), ["", "ISO 2022 IR 87"])
    sent = raw_bytes(on_the_wire(response), PATIENT_NAME_TAG)
    ideographic = sent.split(b"=", 1)[1]
    assert ideographic.count(b"^") == 1
    before_caret = ideographic.split(b"^")[0]
    assert before_caret.endswith(ESCAPE_TO_ASCII)
    assert sent.endswith(ESCAPE_TO_ASCII)


def test_response_stripped_iso_2022_terms() -> None:
    """A multi-byte set never becomes the first value of (0008,0005)."""
    response = encode_response(response_with("Yamada^Tarou=山田^太郎"), ["ISO 2022 IR 87"])
    assert list(response.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]


def test_response_falls_back_to_utf8() -> None:
    response = encode_response(response_with("Buc^Jérôme"), ["", "ISO 2022 IR 87"])
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert raw_bytes(on_the_wire(response), PATIENT_NAME_TAG) == "Buc^Jérôme".encode("utf-8")


def test_response_in_request_charset() -> None:
    response = encode_response(response_with("Müller^Hans"), ["ISO_IR 100"])
    assert response.SpecificCharacterSet == "ISO_IR 100"
    assert raw_bytes(on_the_wire(response), PATIENT_NAME_TAG) == b"M\xfcller^Hans"


def test_response_without_request_charset() -> None:
    assert "SpecificCharacterSet" not in encode_response(response_with("Doe^John"), [])
    assert encode_response(response_with("Müller^Hans"), []).SpecificCharacterSet == "ISO_IR 192"


def test_response_ascii_echoes_request_charset() -> None:
    assert encode_response(response_with("Doe^John"), ["ISO_IR 100"]).SpecificCharacterSet == "ISO_IR 100"


def test_response_replaces_peer_charset() -> None:
    response = response_with("Müller^Hans")
    response.SpecificCharacterSet = "ISO_IR 100"
    assert encode_response(response, []).SpecificCharacterSet == "ISO_IR 192"


def test_response_counts_sequence_values() -> None:
    response = response_with("Doe^John")
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 144"
    item.RequestedProcedureDescription = "Рентген"
    response.RequestAttributesSequence = [item]
    encoded = encode_response(response, ["ISO_IR 100"])
    assert encoded.SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in encoded.RequestAttributesSequence[0]


@pytest.mark.parametrize(
    ("request_charset", "file_name"),
    [(["ISO_IR 192"], "chrX1.dcm"), (["", "ISO 2022 IR 87"], "chrH31.dcm"), (["ISO_IR 100"], "chrFren.dcm")],
)
def test_component_groups_round_trip(request_charset: list[str], file_name: str) -> None:
    expected = str(charset_file(file_name).PatientName)
    decoded = decode_match(peer(), match_from_file(file_name))
    received = on_the_wire(encode_response(decoded, request_charset))
    assert str(received.PatientName) == expected
    assert charset_terms(received.SpecificCharacterSet) == request_charset


def test_charset_terms_forms() -> None:
    assert charset_terms("") == []
    assert charset_terms(None) == []
    assert charset_terms("\\ISO 2022 IR 87") == ["", "ISO 2022 IR 87"]
    assert charset_terms(["", "ISO 2022 IR 87"]) == ["", "ISO 2022 IR 87"]
    assert charset_terms("ISO_IR 100") == ["ISO_IR 100"]

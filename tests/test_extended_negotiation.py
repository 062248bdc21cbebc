"""SOP Class Extended Negotiation response items for the Query/Retrieve SOP Classes."""

from __future__ import annotations

from types import SimpleNamespace

from yicrouter.query import InformationModel
from yicrouter.scp.extended_negotiation import find_response, handle_sop_extended, retrieve_response

FIND = InformationModel.STUDY_ROOT.find_sop_class
MOVE = InformationModel.PATIENT_ROOT.move_sop_class
GET = InformationModel.STUDY_ROOT.get_sop_class


def test_find_single_byte_gets_single_byte() -> None:
    assert find_response(b"\x01") == b"\x01"
    assert find_response(b"\x00") == b"\x00"


def test_find_relational_and_combined() -> None:
    assert find_response(b"\x01\x01") == b"\x01\x01"
    assert find_response(b"\x00\x01") == b"\x00\x01"
    assert find_response(b"\x01\x00") == b"\x01\x00"


def test_find_unsupported_bytes_turned_down() -> None:
    # Fuzzy semantic matching and timezone query adjustment are not supported.
    assert find_response(b"\x01\x01\x01\x01") == b"\x01\x01"


def test_retrieve_relational_accepted() -> None:
    assert retrieve_response(b"\x01") == b"\x01"
    assert retrieve_response(b"\x01\x01") == b"\x01"
    assert retrieve_response(b"\x00") == b"\x00"


def test_handler_answers_query_retrieve_classes_only() -> None:
    event = SimpleNamespace(app_info={FIND: b"\x01", MOVE: b"\x01", GET: b"\x00", "1.2.840.10008.5.1.4.1.1.2": b"\x01"})
    assert handle_sop_extended(event) == {FIND: b"\x01", MOVE: b"\x01", GET: b"\x00"}

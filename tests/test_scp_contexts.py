"""Presentation context negotiation with the router as the association acceptor.

A requester may propose up to 128 presentation contexts (PS3.8 9.3.2.2), and
the router accepts each one whose abstract syntax it supports. As a Storage
SCP it accepts Explicit VR Big Endian, retired, when that is all a requester
proposes. Otherwise it picks the first of its own preference that was
proposed: Explicit VR Little Endian, then lossless compressed syntaxes, then
Implicit VR Little Endian, then other syntaxes, and Explicit VR Big Endian last.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
)

from harness.ports import DicomNode, free_port
from harness.router import RouterProcess, WorkstationEntry
from yicrouter import status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

WORKSTATION_AE = "WS1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Presentation context IDs are odd numbers from 1 to 255 (PS3.8 9.3.2.2), so
# an association has at most 128 presentation contexts.
MAX_PRESENTATION_CONTEXTS = 128
# A SOP Class UID under the 2.25 root (PS3.5 B.2) that no one has defined.
UNKNOWN_SOP_CLASS = "2.25.1234567890123456789"
# A-ASSOCIATE-AC result of a presentation context (PS3.8 table 9-18).
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    process = RouterProcess(
        tmp_path_factory.mktemp("scp-contexts"),
        workstations=[WorkstationEntry(DicomNode(WORKSTATION_AE, free_port()))],
    )
    try:
        yield process.start()
    finally:
        exit_status = process.stop()
    assert exit_status == 0, f"the router exited with {exit_status}:\n{process.log_text()[-3000:]}"


def associate(router: RouterProcess, ae: AE) -> Association:
    assoc = ae.associate(router.node.host, router.node.port, ae_title=router.ae_title)
    assert assoc.is_established, "the router did not accept the association"
    return assoc


def test_max_contexts_accepted(router: RouterProcess) -> None:
    storage_classes = [str(context.abstract_syntax) for context in AllStoragePresentationContexts]
    supported = storage_classes[: MAX_PRESENTATION_CONTEXTS - 2]
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(Verification)
    for sop_class in supported:
        ae.add_requested_context(sop_class, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    ae.add_requested_context(UNKNOWN_SOP_CLASS, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    assert len(ae.requested_contexts) == MAX_PRESENTATION_CONTEXTS

    assoc = associate(router, ae)
    try:
        accepted = {str(context.abstract_syntax): context for context in assoc.accepted_contexts}
        rejected = {str(context.abstract_syntax): context for context in assoc.rejected_contexts}
        echo = assoc.send_c_echo()
    finally:
        assoc.release()

    assert sorted(accepted) == sorted([Verification, *supported])
    for sop_class in supported:
        assert accepted[sop_class].transfer_syntax == [ExplicitVRLittleEndian], sop_class
    assert list(rejected) == [UNKNOWN_SOP_CLASS]
    assert rejected[UNKNOWN_SOP_CLASS].result == ABSTRACT_SYNTAX_NOT_SUPPORTED
    assert "Status" in echo, "the C-ECHO got no response"
    assert int(echo.Status) == status.SUCCESS


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        ([ExplicitVRBigEndian], ExplicitVRBigEndian),
        ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], ExplicitVRLittleEndian),
        ([ExplicitVRBigEndian, ImplicitVRLittleEndian], ImplicitVRLittleEndian),
        ([ImplicitVRLittleEndian, JPEG2000Lossless], JPEG2000Lossless),
        ([JPEGBaseline8Bit, ImplicitVRLittleEndian], ImplicitVRLittleEndian),
    ],
    ids=["big-endian-only", "implicit-explicit", "big-endian-implicit", "implicit-jpeg2000-lossless",
         "jpeg-baseline-implicit"],
)
def test_ct_transfer_syntax_chosen(router: RouterProcess, proposed: list[str], expected: str) -> None:
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(CT_IMAGE_STORAGE, proposed)

    assoc = associate(router, ae)
    try:
        accepted = assoc.accepted_contexts
    finally:
        assoc.release()

    assert len(accepted) == 1
    assert str(accepted[0].abstract_syntax) == CT_IMAGE_STORAGE
    assert accepted[0].transfer_syntax == [expected]

"""Proposed presentation contexts, and payloads for the contexts a destination accepted.

The accepted contexts are built in memory. Payloads are encoded the way
pynetdicom's send_c_store() encodes them, and one test sends them to an
in-process pynetdicom SCP.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEGBaseline8Bit,
    MPEG2MPML,
)
from pynetdicom import AE, build_context, evt
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from harness.ports import LOOPBACK, free_port
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
from yicrouter import status, transcode
from yicrouter.transcode import MAX_CONTEXTS, Payload, Unsendable

# pydicom test file, and the uncompressed file with the same pixel values
# where pydicom ships one.
COMPRESSED_CASES = [
    ("JPEG2000.dcm", None),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("SC_rgb_jpeg_dcmtk.dcm", None),
]


def _build(tmp_path: Path, name: str, **options: str) -> BuiltInstance:
    return write_instance(source_dataset(name), tmp_path / f"{Path(name).stem}.dcm", **options)


def _accepted(sop_class_uid: str, *syntaxes: str) -> list[PresentationContext]:
    """Return one accepted context per transfer syntax, as a destination would."""
    return [build_context(sop_class_uid, [syntax]) for syntax in syntaxes]


def _payload(instance: BuiltInstance, *syntaxes: str) -> Payload:
    payload = transcode.prepare(instance.received(), _accepted(instance.sop_class_uid, *syntaxes))
    assert isinstance(payload, Payload), payload
    return payload


def _sent(payload: Payload) -> Dataset:
    """Encode a data set payload as send_c_store() does, and decode the bytes again."""
    assert isinstance(payload.data, Dataset)
    syntax = UID(payload.transfer_syntax)
    encoded = encode(payload.data, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert encoded is not None, "pynetdicom could not encode the payload"
    received = decode(io.BytesIO(encoded), syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    received.file_meta = payload.data.file_meta
    return received


# --- proposed contexts --------------------------------------------------------


def _pairs(contexts: list[PresentationContext]) -> list[tuple[str, list[str]]]:
    return [(str(context.abstract_syntax), [str(s) for s in context.transfer_syntax]) for context in contexts]


def test_proposed_own_syntax_and_uncompressed_pair() -> None:
    ct = "1.2.840.10008.5.1.4.1.1.2"

    plan = transcode.proposed_contexts({ct: {JPEG2000}})

    assert len(plan) == 1
    assert _pairs(plan[0]) == [
        (ct, [JPEG2000]),
        (ct, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    ]


def test_proposed_never_big_endian() -> None:
    mr = "1.2.840.10008.5.1.4.1.1.4"

    plan = transcode.proposed_contexts({mr: {ExplicitVRBigEndian, ImplicitVRLittleEndian}})

    syntaxes = [syntax for context in plan[0] for syntax in context.transfer_syntax]
    assert ExplicitVRBigEndian not in syntaxes
    assert _pairs(plan[0]) == [
        (mr, [ImplicitVRLittleEndian]),
        (mr, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    ]


def test_proposed_split_at_128_contexts() -> None:
    sop_classes = storage_sop_classes(70)

    plan = transcode.proposed_contexts({uid: {JPEGBaseline8Bit} for uid in sop_classes})

    assert len(plan) == 2
    assert all(len(contexts) <= MAX_CONTEXTS for contexts in plan)
    assert sum(len(contexts) for contexts in plan) == 140
    first = {context.abstract_syntax for context in plan[0]}
    second = {context.abstract_syntax for context in plan[1]}
    assert not first & second, "a SOP Class was split over two associations"
    assert first | second == set(sop_classes)


def test_proposed_new_class_changes_last_only() -> None:
    wanted: dict[str, set[str]] = {uid: {JPEGBaseline8Bit} for uid in storage_sop_classes(70)}
    before = transcode.proposed_contexts(wanted)

    wanted[storage_sop_classes(71)[-1]] = {ExplicitVRLittleEndian}
    after = transcode.proposed_contexts(wanted)

    assert _pairs(after[0]) == _pairs(before[0])
    assert len(after[1]) == len(before[1]) + 2


# --- prepare: sending unchanged ------------------------------------------------


def test_prepare_own_syntax_sends_file(tmp_path: Path) -> None:
    instance = _build(tmp_path, "JPEG2000.dcm")

    payload = _payload(instance, ExplicitVRLittleEndian, JPEG2000)

    assert payload.data == instance.path
    assert payload.transfer_syntax == JPEG2000
    assert not payload.converted


def test_prepare_deflated_accepted_sends_file(tmp_path: Path) -> None:
    instance = _build(tmp_path, "image_dfl.dcm")

    payload = _payload(instance, DeflatedExplicitVRLittleEndian)

    assert payload.data == instance.path


# --- prepare: decoding --------------------------------------------------------


@pytest.mark.parametrize(("name", "uncompressed_name"), COMPRESSED_CASES, ids=[c[0] for c in COMPRESSED_CASES])
def test_prepare_decodes_compressed(tmp_path: Path, name: str, uncompressed_name: str | None) -> None:
    instance = _build(tmp_path, name)
    original = dcmread(instance.path)

    payload = _payload(instance, ExplicitVRLittleEndian)
    sent = _sent(payload)

    assert payload.transfer_syntax == ExplicitVRLittleEndian
    assert payload.source_transfer_syntax == instance.transfer_syntax
    assert sent.SOPInstanceUID == instance.sop_instance_uid
    assert not sent["PixelData"].is_undefined_length
    assert numpy.array_equal(sent.pixel_array, original.pixel_array)
    if uncompressed_name is not None:
        assert numpy.array_equal(sent.pixel_array, source_dataset(uncompressed_name).pixel_array)


def test_prepare_prefers_explicit_vr(tmp_path: Path) -> None:
    instance = _build(tmp_path, "MR_small_RLE.dcm")

    payload = _payload(instance, ImplicitVRLittleEndian, ExplicitVRLittleEndian)

    assert payload.transfer_syntax == ExplicitVRLittleEndian


def test_prepare_implicit_only_destination(tmp_path: Path) -> None:
    instance = _build(tmp_path, "MR_small_jp2klossless.dcm")

    payload = _payload(instance, JPEGBaseline8Bit, ImplicitVRLittleEndian)
    sent = _sent(payload)

    assert payload.transfer_syntax == ImplicitVRLittleEndian
    assert numpy.array_equal(sent.pixel_array, source_dataset("MR_small.dcm").pixel_array)


def test_prepare_deflated_as_last_resort(tmp_path: Path) -> None:
    instance = _build(tmp_path, "MR_small_RLE.dcm")

    payload = _payload(instance, JPEGBaseline8Bit, DeflatedExplicitVRLittleEndian)
    sent = _sent(payload)

    assert payload.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert numpy.array_equal(sent.pixel_array, source_dataset("MR_small.dcm").pixel_array)


def test_prepare_marks_jpeg_baseline_lossy(tmp_path: Path) -> None:
    dataset = source_dataset("SC_rgb_jpeg_dcmtk.dcm")
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in dataset:
            delattr(dataset, keyword)
    instance = write_instance(dataset, tmp_path / "jpeg.dcm")

    sent = _sent(_payload(instance, ExplicitVRLittleEndian))

    assert sent.LossyImageCompression == "01"
    assert sent.LossyImageCompressionMethod == "ISO_10918_1"
    assert sent.PhotometricInterpretation == "RGB"


def test_prepare_inflates_deflated(tmp_path: Path) -> None:
    dataset = source_dataset("image_dfl.dcm")
    add_private_sequence(dataset)
    instance = write_instance(dataset, tmp_path / "deflated.dcm")
    original = dcmread(instance.path)

    sent = _sent(_payload(instance, ExplicitVRLittleEndian))

    assert sent.PixelData == original.PixelData
    assert sent[PRIVATE_CREATOR_TAG].value == PRIVATE_CREATOR
    assert sent[PRIVATE_SEQUENCE_TAG].VR == "SQ"
    assert sent[PRIVATE_SEQUENCE_TAG].value[0].ImageComments == "private item"


def test_prepare_big_endian_to_little(tmp_path: Path) -> None:
    instance = _build(tmp_path, "MR_small_bigendian.dcm")
    little = source_dataset("MR_small.dcm")

    payload = _payload(instance, ExplicitVRLittleEndian)
    sent = _sent(payload)

    assert payload.source_transfer_syntax == ExplicitVRBigEndian
    assert sent.PixelData == little.PixelData
    assert sent.Rows == little.Rows
    assert sent.PixelRepresentation == little.PixelRepresentation


@pytest.mark.parametrize(("name", "little_name"), [
    ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),  # 8 bits, odd length
    ("rtdose_expb.dcm", "rtdose.dcm"),  # 32 bits, several frames
])  # fmt: skip
def test_prepare_big_endian_other_widths(tmp_path: Path, name: str, little_name: str) -> None:
    instance = _build(tmp_path, name)

    sent = _sent(_payload(instance, ImplicitVRLittleEndian))

    assert numpy.array_equal(sent.pixel_array, source_dataset(little_name).pixel_array)


def test_private_undefined_length_read_as_sq(tmp_path: Path) -> None:
    dataset = source_dataset("CT_small.dcm")
    add_private_sequence(dataset, "implicit item")
    instance = write_instance(dataset, tmp_path / "implicit.dcm", transfer_syntax=ImplicitVRLittleEndian)

    payload = _payload(instance, ExplicitVRLittleEndian)
    sent = _sent(payload)

    # In Implicit VR the private sequence carries no VR, so pydicom can
    # recognise it as a sequence only by its undefined length.
    assert sent[PRIVATE_SEQUENCE_TAG].VR == "SQ"
    assert sent[PRIVATE_SEQUENCE_TAG].value[0].ImageComments == "implicit item"
    assert sent[PRIVATE_CREATOR_TAG].value == PRIVATE_CREATOR


def test_prepare_decodes_icon_pixel_data(tmp_path: Path) -> None:
    dataset = source_dataset("SC_rgb_jpeg_dcmtk.dcm")
    icon = Dataset()
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration"):
        setattr(icon, keyword, dataset[keyword].value)
    icon.add(dataset["PixelData"])
    dataset.IconImageSequence = [icon]
    instance = write_instance(dataset, tmp_path / "icon.dcm")

    sent = _sent(_payload(instance, ExplicitVRLittleEndian))

    sent_icon = sent.IconImageSequence[0]
    assert not sent_icon["PixelData"].is_undefined_length
    assert len(sent_icon.PixelData) == sent_icon.Rows * sent_icon.Columns * 3


# --- prepare: unsendable ------------------------------------------------------


def test_prepare_undecodable_pixel_data(tmp_path: Path) -> None:
    # pydicom's JPEG-lossy.dcm has a scan header that pylibjpeg rejects.
    instance = _build(tmp_path, "JPEG-lossy.dcm")

    result = transcode.prepare(instance.received(), _accepted(instance.sop_class_uid, ExplicitVRLittleEndian))

    assert isinstance(result, Unsendable)
    assert "could not be decoded" in result.reason


def test_prepare_no_decoder(tmp_path: Path) -> None:
    instance = _build(tmp_path, "SC_rgb_jpeg_dcmtk.dcm", transfer_syntax=MPEG2MPML)

    result = transcode.prepare(instance.received(), _accepted(instance.sop_class_uid, ExplicitVRLittleEndian))

    assert isinstance(result, Unsendable)
    assert "no decoder" in result.reason


def test_prepare_never_compressed_under_other(tmp_path: Path) -> None:
    instance = _build(tmp_path, "JPEG2000.dcm")

    result = transcode.prepare(instance.received(), _accepted(instance.sop_class_uid, JPEGBaseline8Bit))

    assert isinstance(result, Unsendable)
    assert "JPEG Baseline" in result.reason


def test_prepare_sop_class_not_accepted(tmp_path: Path) -> None:
    instance = _build(tmp_path, "CT_small.dcm")

    result = transcode.prepare(instance.received(), _accepted("1.2.840.10008.5.1.4.1.1.4", ExplicitVRLittleEndian))

    assert isinstance(result, Unsendable)
    assert instance.sop_class_uid in result.reason


# --- send_c_store with the payload -------------------------------------------


@pytest.fixture
def implicit_only_scp() -> Iterator[tuple[int, list[tuple[str, Dataset]]]]:
    """A pynetdicom storage SCP that accepts every storage SOP Class in Implicit VR Little Endian only."""
    received: list[tuple[str, Dataset]] = []
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with lock:
            received.append((str(event.context.transfer_syntax), dataset))
        return status.SUCCESS

    ae = AE(ae_title="IMPLICIT")
    for sop_class in storage_sop_classes(20):
        ae.add_supported_context(sop_class, [ImplicitVRLittleEndian])
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.4", [ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server((LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        yield port, received
    finally:
        server.shutdown()


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm"])
def test_payload_passes_send_c_store(
    tmp_path: Path, implicit_only_scp: tuple[int, list[tuple[str, Dataset]]], name: str
) -> None:
    port, received = implicit_only_scp
    instance = _build(tmp_path, name)
    ae = AE(ae_title="SENDER")
    assoc = ae.associate(LOOPBACK, port, contexts=transcode.proposed_contexts(
        {instance.sop_class_uid: {instance.transfer_syntax}})[0], ae_title="IMPLICIT")
    assert assoc.is_established
    try:
        payload = transcode.prepare(instance.received(), assoc.accepted_contexts)
        assert isinstance(payload, Payload), payload
        response = assoc.send_c_store(payload.data)
    finally:
        assoc.release()

    assert response.Status == status.SUCCESS
    assert [syntax for syntax, _ in received] == [ImplicitVRLittleEndian]
    assert numpy.array_equal(received[0][1].pixel_array, source_dataset("MR_small.dcm").pixel_array)

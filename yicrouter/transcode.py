"""Presentation contexts and payloads for the router's outgoing C-STORE requests.

The router proposes, for each SOP Class it has seen, the transfer syntaxes of
the instances received plus Explicit and Implicit VR Little Endian. An
instance whose own transfer syntax was accepted goes out as the file received.
Otherwise it is decoded and re-encoded in an accepted uncompressed transfer
syntax: compressed pixel data is decompressed, Deflated data is inflated and
Big Endian data is byte-swapped to Little Endian.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext

from yicrouter.moves import ReceivedInstance

# PS3.8 9.3.2.2: at most 128 presentation contexts in one A-ASSOCIATE-RQ.
MAX_CONTEXTS = 128

# The pair proposed for every SOP Class. Implicit VR Little Endian is the
# DICOM default transfer syntax, so an SCP that supports the SOP Class
# accepts this context.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# Retired since 2004 (PS3.5 A.3), so the router accepts it as an SCP but
# never proposes it.
NEVER_PROPOSED = frozenset({ExplicitVRBigEndian})

# Transfer syntaxes that prepare() can re-encode into, best first. Explicit VR
# comes first because it keeps the VR of private elements, which Implicit VR
# loses. Deflated is used only when a requester accepted nothing else.
_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)

# Bytes per value of the VRs whose values are byte-swapped between Big and
# Little Endian (PS3.5 7.3). Other VRs are decoded to Python values, which
# pydicom encodes again in the new byte order.
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

# JPEG processes that are always lossy (ISO/IEC 10918-1 DCT), and the defined
# term of Lossy Image Compression Method for them (PS3.3 C.7.6.1.1.5.1).
_ALWAYS_LOSSY = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1"}


def storage_scp_preference(offered: Sequence[str]) -> list[str]:
    """Return `offered` transfer syntaxes in the order the router accepts them as a Storage SCP.

    pynetdicom 3.0.4 accepts the first syntax of this list that the requester
    proposed in a context. Explicit VR Little Endian comes first, so private
    elements keep their VRs. Lossless compressed syntaxes come before Implicit
    VR Little Endian, so compressed instances pass through unchanged. Explicit
    VR Big Endian, retired, comes last (PS3.5 A.3).
    """
    def rank(uid: str) -> tuple[int, int]:
        syntax = UID(uid)
        if syntax == ExplicitVRLittleEndian:
            group = 0
        elif syntax.is_compressed and "Lossless" in syntax.name and "Lossy" not in syntax.name:
            group = 1
        elif syntax == DeflatedExplicitVRLittleEndian:
            group = 2
        elif syntax == ImplicitVRLittleEndian:
            group = 3
        elif syntax == ExplicitVRBigEndian:
            group = 5
        else:
            group = 4
        return group, offered.index(uid)

    return sorted(offered, key=rank)


@dataclass(frozen=True)
class Payload:
    """The data of one C-STORE: the received file unchanged, or a re-encoded data set.

    For a data set, `transfer_syntax` is also its file meta Transfer Syntax
    UID, which is how pynetdicom's send_c_store() picks the presentation context.
    """

    data: Path | Dataset
    transfer_syntax: str
    # The transfer syntax the instance was received in.
    source_transfer_syntax: str = ""

    @property
    def converted(self) -> bool:
        return isinstance(self.data, Dataset)


@dataclass(frozen=True)
class Unsendable:
    """The reason an instance cannot be sent over the accepted presentation contexts."""

    reason: str


class _DecodeError(Exception):
    """Raised when an instance cannot be converted to an uncompressed transfer syntax."""


def prepare(instance: ReceivedInstance, accepted: Sequence[PresentationContext]) -> Payload | Unsendable:
    """Return the payload for `instance` over one of the `accepted` contexts, or why there is none.

    Contexts in which the local AE may not act as SCU (as_scu is False) are
    ignored, because send_c_store() cannot use them.
    """
    syntaxes = _accepted_syntaxes(instance.sop_class_uid, accepted)
    if not syntaxes:
        return Unsendable(
            f"the destination accepted no presentation context in which the router can send "
            f"SOP Class {_describe(instance.sop_class_uid)}"
        )
    if instance.transfer_syntax in syntaxes:
        return Payload(instance.path, instance.transfer_syntax, instance.transfer_syntax)
    target = next((syntax for syntax in _TARGETS if syntax in syntaxes), None)
    if target is None:
        offered = ", ".join(_describe(syntax) for syntax in syntaxes)
        return Unsendable(
            f"the destination accepted SOP Class {_describe(instance.sop_class_uid)} only with "
            f"{offered}, and the router re-encodes only to uncompressed Little Endian transfer syntaxes"
        )
    try:
        dataset = _decode(instance.path)
    except _DecodeError as exc:
        return Unsendable(str(exc))
    return Payload(_with_transfer_syntax(dataset, target), target, instance.transfer_syntax)


def proposed_contexts(wanted: dict[str, set[str]]) -> list[list[PresentationContext]]:
    """Return the presentation contexts to propose for SOP Classes and their transfer syntaxes.

    Each SOP Class gets one context per transfer syntax it was received in,
    except Explicit VR Big Endian, and one context with Explicit and Implicit
    VR Little Endian. The result is split into lists of at most 128 contexts,
    one per association, and all contexts of a SOP Class stay in one list.
    SOP Classes are packed in the order of `wanted`, always into the last
    list, so adding a SOP Class to `wanted` changes only the last list.
    """
    groups: list[list[PresentationContext]] = []
    for sop_class, syntaxes in wanted.items():
        contexts = _contexts_for(sop_class, syntaxes)
        if not groups or len(groups[-1]) + len(contexts) > MAX_CONTEXTS:
            groups.append([])
        groups[-1].extend(contexts)
    return groups


def _contexts_for(sop_class: str, syntaxes: set[str]) -> list[PresentationContext]:
    own = sorted(syntaxes - NEVER_PROPOSED)
    contexts = [build_context(sop_class, [syntax]) for syntax in own]
    # When both uncompressed syntaxes have a context of their own already,
    # the pair adds nothing.
    if not set(UNCOMPRESSED) <= set(own):
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    return contexts


def _accepted_syntaxes(sop_class: str, accepted: Sequence[PresentationContext]) -> list[str]:
    return [
        str(context.transfer_syntax[0])
        for context in accepted
        if context.abstract_syntax == sop_class and context.transfer_syntax and context.as_scu is not False
    ]


def _describe(uid: str) -> str:
    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


# --- decoding -----------------------------------------------------------------


def _decode(path: Path) -> Dataset:
    """Read a received file and convert it in place to Explicit VR Little Endian.

    NOTE: this keeps the whole instance in memory, decompressed pixel data
    included, unlike sending the file unchanged, which pynetdicom streams
    from disk in chunks.
    """
    try:
        dataset = dcmread(path)
        source = UID(dataset.file_meta.TransferSyntaxUID)
        is_big_endian = source == ExplicitVRBigEndian
        is_encapsulated = source.is_transfer_syntax and source.is_encapsulated
    except Exception as exc:  # pydicom raises many types on malformed data
        raise _DecodeError(f"the instance could not be read: {exc}") from exc
    if not source.is_transfer_syntax:
        raise _DecodeError(f"transfer syntax {source} is unknown, so the instance cannot be decoded")
    if is_encapsulated:
        for item in _encapsulated_datasets(dataset):
            _decompress(item, source)
        _mark_lossy(dataset, source)
    elif is_big_endian:
        try:
            _swap_to_little_endian(dataset)
        except (ValueError, TypeError) as exc:
            raise _DecodeError(f"the Big Endian instance could not be converted: {exc}") from exc
    return dataset


def _encapsulated_datasets(dataset: Dataset) -> Iterator[Dataset]:
    """Yield `dataset` and every nested item whose Pixel Data is encapsulated.

    Under an encapsulated transfer syntax the pixel data of nested items, such
    as an Icon Image Sequence item, may be encapsulated too (PS3.5 A.4).
    Encapsulated pixel data always has an undefined length (PS3.5 A.4).
    """
    if "PixelData" in dataset and dataset["PixelData"].is_undefined_length:
        yield dataset
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                yield from _encapsulated_datasets(item)


def _decompress(dataset: Dataset, source: UID) -> None:
    try:
        decoder = get_decoder(source)
    except NotImplementedError as exc:
        raise _DecodeError(f"pydicom has no decoder for {_describe(source)}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise _DecodeError(f"no decoder is installed for {_describe(source)}: {missing}")
    if not hasattr(dataset, "file_meta"):
        # decompress() reads the transfer syntax from the file meta, which
        # nested items do not have.
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = source
    try:
        dataset.decompress(generate_instance_uid=False)
    except Exception as exc:  # pydicom and its plugins raise many types on bad pixel data
        raise _DecodeError(f"the {_describe(source)} pixel data could not be decoded: {exc}") from exc


def _mark_lossy(dataset: Dataset, source: UID) -> None:
    """Record a lossy compression that decompressing would otherwise hide (PS3.3 C.7.6.1.1.5)."""
    method = _ALWAYS_LOSSY.get(source)
    if method is None or dataset.get("LossyImageCompression") == "01":
        return
    dataset.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in dataset:
        dataset.LossyImageCompressionMethod = method


def _swap_to_little_endian(dataset: Dataset) -> None:
    """Byte-swap the OW, OF, OL, OD and OV values of a Big Endian data set and its items.

    pydicom re-encodes every other VR from its decoded value, but writes the
    bytes of these VRs unchanged.
    """
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _swap_to_little_endian(item)
            continue
        width = _SWAP_WIDTH.get(element.VR)
        if width is None or not element.value:
            continue
        if element.tag == 0x7FE00010 and dataset.get("BitsAllocated", 0) in (32, 64):
            # pydicom decodes Big Endian pixel data of 32 or 64 bits per
            # sample as whole values, not as 16-bit words.
            width = int(dataset.BitsAllocated) // 8
        element.value = numpy.frombuffer(element.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _with_transfer_syntax(decoded: Dataset, target: str) -> Dataset:
    """Return `decoded` as a data set that pynetdicom encodes in `target`.

    send_c_store() rejects a data set whose original encoding differs from
    its file meta Transfer Syntax UID. A new Dataset shares the elements but
    has no original encoding, so pydicom re-encodes every element in the
    transfer syntax of the presentation context.
    """
    dataset = Dataset(decoded)
    file_meta = FileMetaDataset(decoded.file_meta)
    file_meta.TransferSyntaxUID = UID(target)
    dataset.file_meta = file_meta
    return dataset

"""Test instances in particular transfer syntaxes, built from pydicom's test files.

The transcoding tests need compressed, Deflated and Big Endian instances,
instances with private sequences, and instances of many storage SOP Classes.
Each builder writes a file with its own Study, Series and SOP Instance UIDs
and keeps the source's transfer syntax unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid
from pynetdicom import AllStoragePresentationContexts

from yicrouter.moves import ReceivedInstance

# (0029,0010) and (0029,1010): the private creator and private sequence that
# add_private_sequence() writes.
PRIVATE_CREATOR_TAG = 0x00290010
PRIVATE_SEQUENCE_TAG = 0x00291010
PRIVATE_CREATOR = "YICROUTER TEST"


@dataclass(frozen=True)
class BuiltInstance:
    """One written test file and the UIDs that tests check against."""

    path: Path
    study_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str

    def received(self) -> ReceivedInstance:
        """Return the instance as the router's C-STORE SCP would have recorded it."""
        return ReceivedInstance(
            path=self.path,
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax=self.transfer_syntax,
            size=self.path.stat().st_size,
        )


def source_dataset(name: str) -> Dataset:
    """Read a file from pydicom's test data, for example "JPEG2000.dcm"."""
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file not found: {name}")
    return dcmread(path)


def add_private_sequence(dataset: Dataset, text: str = "private item") -> None:
    """Add private creator (0029,0010) and a private SQ (0029,1010) of undefined length.

    Any existing elements of group 0029 are removed first, so the creator
    takes block 10. The item holds one standard element, Image Comments.
    """
    for tag in [tag for tag in dataset.keys() if tag.group == 0x0029]:
        del dataset[tag]
    block = dataset.private_block(0x0029, PRIVATE_CREATOR, create=True)
    item = Dataset()
    item.ImageComments = text
    item.is_undefined_length_sequence_item = True
    block.add_new(0x10, "SQ", Sequence([item]))
    dataset[PRIVATE_SEQUENCE_TAG].is_undefined_length = True


def write_instance(
    dataset: Dataset,
    path: Path,
    *,
    study_uid: str | None = None,
    sop_class_uid: str | None = None,
    transfer_syntax: str | None = None,
) -> BuiltInstance:
    """Give `dataset` new UIDs, write it to `path` and return what was written.

    `transfer_syntax` changes only the file meta Transfer Syntax UID, so it
    suits switching between Implicit and Explicit VR Little Endian, or
    labelling bytes with a syntax that no decoder supports.
    """
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    if sop_class_uid is not None:
        dataset.SOPClassUID = UID(sop_class_uid)
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if transfer_syntax is not None:
        dataset.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return BuiltInstance(
        path=path,
        study_instance_uid=str(dataset.StudyInstanceUID),
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        transfer_syntax=str(dataset.file_meta.TransferSyntaxUID),
    )


def storage_sop_classes(count: int) -> list[str]:
    """Return `count` distinct storage SOP Class UIDs from pynetdicom's list."""
    uids = list(dict.fromkeys(str(context.abstract_syntax) for context in AllStoragePresentationContexts))
    if count > len(uids):
        raise ValueError(f"pynetdicom lists {len(uids)} storage SOP Classes, {count} requested")
    return uids[:count]

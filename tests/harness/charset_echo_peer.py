"""A C-FIND peer that declares (0008,0005) in its matches only when the request carried it.

Some PACS store text in one character set and return its bytes unchanged,
but state (0008,0005) only in response to a request that stated one. A
router that sends plain ASCII keys without (0008,0005) then gets bytes that
declare no character set. No real PACS in the test suite can be made to act
this way, so this pynetdicom fake plays it.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings, encode_string
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from harness.recording_peer import RecordingFindPeer

# The VRs that (0008,0005) applies to (PS3.5 6.1.2.3).
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})


def _stored_bytes(element: DataElement, encodings: list[str]) -> bytes:
    """Return the value of a text element encoded with `encodings`, values joined with backslashes."""
    values = element.value if isinstance(element.value, MultiValue) else [element.value]
    encoded = []
    for value in values:
        if isinstance(value, PersonName):
            encoded.append(value.encode(encodings))
        else:
            encoded.append(encode_string(str(value), encodings))
    return b"\\".join(encoded)


class CharsetEchoPeer(RecordingFindPeer):
    """A RecordingFindPeer whose matches are always encoded in each record's own (0008,0005).

    A match carries that (0008,0005) only when the request contained
    (0008,0005), whatever its value. Records must declare their character set.
    """

    def _response(self, identifier: Dataset, record: Dataset) -> Dataset:
        if "SpecificCharacterSet" not in record:
            raise ValueError("CharsetEchoPeer records must contain (0008,0005)")
        response = super()._response(identifier, record)
        encodings = convert_encodings(record.SpecificCharacterSet)
        for element in response:
            if element.VR in _CHARSET_VRS and not element.is_empty:
                # pydicom writes a bytes value as it is, whatever the dataset declares.
                element.value = _stored_bytes(element, encodings)
        if "SpecificCharacterSet" in identifier:
            response.SpecificCharacterSet = record.SpecificCharacterSet
        else:
            del response.SpecificCharacterSet
        return response

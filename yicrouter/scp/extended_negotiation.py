"""SOP Class Extended Negotiation for the Query/Retrieve SOP Classes (PS3.4 C.5).

The router accepts relational queries and combined date-time matching for
the Find SOP Classes (PS3.4 C.5.1.1, table C.5-2), and relational retrieval
for the Move and Get SOP Classes (C.5.2.1, C.5.3.1). Fuzzy semantic matching
of person names, timezone query adjustment and Enhanced Multi-Frame Image
Conversion are not supported, so their bytes are returned as 0. The SCP
handlers read what was accepted from the association with the functions below.
"""

from __future__ import annotations

from typing import Any, Final

from yicrouter.peer_find import accepts_combined_datetime
from yicrouter.query import InformationModel

# Index of the relational-queries or relational-retrieval byte in the
# Service-Class-Application-Information field.
_RELATIONAL_BYTE: Final = 0

_FIND_SOP_CLASSES: Final = frozenset(model.find_sop_class for model in InformationModel)
_RETRIEVE_SOP_CLASSES: Final = frozenset(
    uid for model in InformationModel for uid in (model.move_sop_class, model.get_sop_class)
)


def handle_sop_extended(event: Any) -> dict[str, bytes]:
    """Handle EVT_SOP_EXTENDED: return a response item for each Query/Retrieve SOP Class proposed.

    An item for any other SOP Class gets no response item, so none of its
    options is accepted.
    """
    accepted = {}
    for uid, information in event.app_info.items():
        uid = str(uid)
        if uid in _FIND_SOP_CLASSES:
            accepted[uid] = find_response(bytes(information or b""))
        elif uid in _RETRIEVE_SOP_CLASSES:
            accepted[uid] = retrieve_response(bytes(information or b""))
    return accepted


def find_response(proposed: bytes) -> bytes:
    """Return the A-ASSOCIATE-AC information for a Find SOP Class (PS3.4 table C.5-2).

    A single proposed byte gets a single byte back, as PS3.4 C.5.1.1
    requires. Otherwise the response has two bytes: relational queries and
    combined date-time matching, each 1 when proposed.
    """
    if not proposed:
        return b"\x00"
    relational = 1 if proposed[_RELATIONAL_BYTE] == 1 else 0
    if len(proposed) == 1:
        return bytes([relational])
    combined = 1 if accepts_combined_datetime(proposed) else 0
    return bytes([relational, combined])


def retrieve_response(proposed: bytes) -> bytes:
    """Return the A-ASSOCIATE-AC information for a Move or Get SOP Class (PS3.4 C.5.2.1, C.5.3.1).

    One byte, relational retrieval, which a one-byte response sets for a
    request of any length. Enhanced Multi-Frame Image Conversion (byte 2) is
    thereby read as 0.
    """
    relational = 1 if proposed[_RELATIONAL_BYTE:1] == b"\x01" else 0
    return bytes([relational])


def accepted_information(assoc: Any, sop_class_uid: str) -> bytes:
    """Return the Service-Class-Application-Information the router accepted for a SOP Class, or b''."""
    accepted = {str(uid): info for uid, info in assoc.acceptor.sop_class_extended.items()}
    return bytes(accepted.get(sop_class_uid, b"") or b"")


def negotiated_relational(assoc: Any, sop_class_uid: str) -> bool:
    """Return True when the requester negotiated relational queries or retrieval for `sop_class_uid`."""
    return accepted_information(assoc, sop_class_uid)[:1] == b"\x01"


def negotiated_combined_datetime(assoc: Any, sop_class_uid: str) -> bool:
    """Return True when the requester negotiated combined date-time matching for `sop_class_uid`."""
    return accepts_combined_datetime(accepted_information(assoc, sop_class_uid))

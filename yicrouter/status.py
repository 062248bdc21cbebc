"""DIMSE status codes that the router sends or interprets.

Each constant cites the PS3.4 (or PS3.7) table that defines it, so no bare hex
literal appears in the routing logic.
"""

from typing import Final

# PS3.7 C.1.1: the status classes shared by every DIMSE service.
SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
# PS3.4 C.4.1.1.4: Pending, with one or more Optional Keys not supported.
PENDING_WARNING: Final = 0xFF01
# PS3.4 C.4.1.1.4, C.4.2.1.5: Cancel, matching or sub-operations terminated.
CANCEL: Final = 0xFE00

# PS3.7 annex C (general status codes, as listed in pynetdicom.status): Refused: Not Authorized.
REFUSED_NOT_AUTHORIZED: Final = 0x0124

# PS3.4 C.4.1.1.4, table C.4-1 (C-FIND).
FIND_OUT_OF_RESOURCES: Final = 0xA700
FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
FIND_UNABLE_TO_PROCESS: Final = 0xC001

# PS3.4 C.4.2.1.5, table C.4-2 (C-MOVE).
MOVE_OUT_OF_RESOURCES_MATCHES: Final = 0xA701
MOVE_OUT_OF_RESOURCES_SUBOPERATIONS: Final = 0xA702
MOVE_DESTINATION_UNKNOWN: Final = 0xA801
MOVE_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
MOVE_UNABLE_TO_PROCESS: Final = 0xC001
# Warning: sub-operations complete, one or more failures or warnings.
MOVE_SUBOPERATIONS_WARNING: Final = 0xB000

# PS3.4 B.2.3, table B.2-1 (C-STORE).
STORE_OUT_OF_RESOURCES: Final = 0xA700
STORE_CANNOT_UNDERSTAND: Final = 0xC000
STORE_REFUSED_NOT_AUTHORIZED: Final = REFUSED_NOT_AUTHORIZED
STORE_WARNING_COERCION: Final = 0xB000
STORE_WARNING_ELEMENTS_DISCARDED: Final = 0xB006
STORE_WARNING_DATA_SET_DOES_NOT_MATCH: Final = 0xB007


def is_pending(status: int) -> bool:
    """Return True for the Pending statuses of C-FIND, C-MOVE and C-GET."""
    return status in (PENDING, PENDING_WARNING)


def is_success(status: int) -> bool:
    return status == SUCCESS


def is_warning(status: int) -> bool:
    """Return True for a Warning status (PS3.7 C.1.1: 0001, Bxxx, 0107, 0116)."""
    return status in (0x0001, 0x0107, 0x0116) or (status & 0xF000) == 0xB000


def is_failure(status: int) -> bool:
    """Return True for any status that is not Success, Warning, Pending or Cancel."""
    return not (
        is_success(status) or is_warning(status) or is_pending(status) or status == CANCEL
    )

# PS3.4 C.4.3.1.4, table C.4-3 (C-GET). The codes equal those of C-MOVE,
# and C-GET has no Move Destination Unknown.
GET_OUT_OF_RESOURCES_MATCHES: Final = 0xA701
GET_OUT_OF_RESOURCES_SUBOPERATIONS: Final = 0xA702
GET_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
GET_UNABLE_TO_PROCESS: Final = 0xC001
# Warning: sub-operations complete, one or more failures or warnings.
GET_SUBOPERATIONS_WARNING: Final = 0xB000

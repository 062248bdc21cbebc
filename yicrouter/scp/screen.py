"""Reject an A-ASSOCIATE-RQ whose AE titles are all spaces, before pynetdicom decodes it.

PS3.5 table 6.2-1 forbids an AE title of spaces only. pynetdicom 3.0.4 fails
to decode such a request and responds with A-ABORT, logging a traceback. The
right answer is A-ASSOCIATE-RJ (PS3.8 9.3.4) with the reason "calling AE
title not recognized" or "called AE title not recognized", so the router
peeks at the first PDU and sends that itself.
"""

from __future__ import annotations

import socket
import struct

from yicrouter.logs import get_logger

log = get_logger(__name__)

# PS3.8 9.3.2: PDU type (1), reserved (1), length (4), protocol version (2),
# reserved (2), Called AE Title (16), Calling AE Title (16).
_ASSOCIATE_RQ = 0x01
_HEADER_LENGTH = 42
_CALLED_AE = slice(10, 26)
_CALLING_AE = slice(26, 42)
# An A-ASSOCIATE-RQ carries at most 128 presentation contexts and a few
# sub-items, far below this; a larger length field is garbage.
_MAX_ASSOCIATE_RQ_LENGTH = 1 << 20

# PS3.8 9.3.4, table 9-21: result 1 (rejected-permanent), source 1 (DICOM UL
# service-user), reason 3 (calling AE title not recognized) or 7 (called).
_REJECT_CALLING = 3
_REJECT_CALLED = 7


def _associate_rj(reason: int) -> bytes:
    return struct.pack(">BBIBBBB", 0x03, 0x00, 4, 0x00, 0x01, 0x01, reason)


def _peek_header(sock: socket.socket, timeout: float) -> bytes:
    """Return the first 42 bytes the peer sent without consuming them, or b"" on timeout."""
    previous = sock.gettimeout()
    try:
        sock.settimeout(timeout)
        return sock.recv(_HEADER_LENGTH, socket.MSG_PEEK | socket.MSG_WAITALL)
    except OSError:
        return b""
    finally:
        sock.settimeout(previous)


def _is_plausible_associate_rq(header: bytes) -> bool:
    """Return True for the start of an A-ASSOCIATE-RQ with a sane length and version 1."""
    if len(header) < _HEADER_LENGTH or header[0] != _ASSOCIATE_RQ:
        return False
    length = int.from_bytes(header[2:6], "big")
    version = int.from_bytes(header[6:8], "big")
    return _HEADER_LENGTH - 6 <= length <= _MAX_ASSOCIATE_RQ_LENGTH and version & 0x0001 == 1


def reject_blank_ae_titles(sock: socket.socket, remote: str, timeout: float) -> bool:
    """Send A-ASSOCIATE-RJ and return True when an AE title is all spaces."""
    header = _peek_header(sock, timeout)
    if not _is_plausible_associate_rq(header):
        # pynetdicom handles anything else, with A-ABORT where it must.
        return False
    if not header[_CALLING_AE].strip(b" "):
        reason = _REJECT_CALLING
    elif not header[_CALLED_AE].strip(b" "):
        reason = _REJECT_CALLED
    else:
        return False
    role = "calling" if reason == _REJECT_CALLING else "called"
    log.warning("association_rejected", remote_address=remote,
                reason=f"{role} AE title is all spaces (PS3.5 table 6.2-1)")
    try:
        sock.sendall(_associate_rj(reason))
    except OSError:
        pass
    return True

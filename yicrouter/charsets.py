"""Specific Character Set (0008,0005) handling between workstations and peers.

DICOM has no character set negotiation, so the router converts at both ends:

- `encode_request` makes a workstation's C-FIND keys fit what one peer can
  match: characters the peer's query character set cannot encode become `?`
  wild cards, and (0008,0005) goes out only when a key needs it.
- `decode_match` turns every text value of a peer's match into str, using the
  character set the match declares or, when it declares none, the peer's
  configured default.
- `encode_response` states in (0008,0005) the character set that the response
  identifier's values need: the request's, when it can encode them all, else
  ISO_IR 192 (UTF-8).

pydicom 3.0.2 encodes str values with the dataset's (0008,0005) when
pynetdicom writes the identifier. For ISO 2022 it encodes each Person Name
component on its own, so the output switches back to ASCII before every `^`
and `=` (PS3.5 6.2.1.2).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from copy import deepcopy
from typing import Final

from pydicom.charset import convert_encodings, python_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from yicrouter.config import PeerSettings
from yicrouter.logs import get_logger

log = get_logger(__name__)

SPECIFIC_CHARACTER_SET_TAG: Final = Tag("SpecificCharacterSet")
# The VRs whose values (0008,0005) applies to (PS3.5 6.1.2.3).
CHARSET_VRS: Final = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
UTF8_CHARSET: Final = "ISO_IR 192"
# The defined terms of the default repertoire. pydicom reads them as
# Latin-1, which would let non-ASCII characters through the checks here.
_ASCII_TERMS: Final = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
_MULTI_BYTE_ISO_2022_TERMS: Final = frozenset(
    {"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"}
)
# The Python codec that pydicom 3.0.2 uses for text that declares no
# (0008,0005), so a value it has already decoded can be turned back into
# the original bytes.
_PYDICOM_DEFAULT_CODEC: Final = "latin_1"

# Peers already warned about non-ASCII matches without (0008,0005).
_warned_peers: set[str] = set()
_warned_lock = threading.Lock()


def charset_terms(value: object) -> list[str]:
    """Return a (0008,0005) value, or a config string with backslashes, as a list of terms.

    Returns [] for the default repertoire. Leading empty terms are kept,
    because `\\ISO 2022 IR 87` means ASCII plus JIS X 0208.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        terms = [str(term).strip() for term in value]
    else:
        terms = [term.strip() for term in str(value).split("\\")]
    return [] if not any(terms) else terms


def declared_charset(dataset: Dataset) -> list[str]:
    """Return the terms of the (0008,0005) that `dataset` itself contains."""
    if SPECIFIC_CHARACTER_SET_TAG not in dataset:
        return []
    return charset_terms(dataset[SPECIFIC_CHARACTER_SET_TAG].value)


def can_encode(text: str, terms: list[str]) -> bool:
    """Return True when every character of `text` is in the repertoire of `terms`."""
    codecs = _codecs(terms)
    return all(_encodable(character, codecs) for character in text)


# --- requests to peers ----------------------------------------------------------


def encode_request(peer: PeerSettings, identifier: Dataset) -> Dataset:
    """Return a copy of a C-FIND identifier in a form that `peer` can match.

    `identifier` contains decoded str values and its (0008,0005) states the
    workstation's character set. Keys are converted to
    `peer.query_charset` when it is set, and each character that it cannot
    encode becomes the wild card `?`, so the peer returns a superset that
    the router's re-matching narrows down. (0008,0005) is sent only when a
    key is not plain ASCII, or always with `peer.always_send_charset`.
    """
    request_terms = declared_charset(identifier)
    target = charset_terms(peer.query_charset) or request_terms
    encoded = deepcopy(identifier)
    needs_charset = _fit_keys(encoded, _codecs(target))
    _remove_nested_charsets(encoded)
    if needs_charset:
        _set_charset(encoded, target)
    elif peer.always_send_charset:
        # A peer that converts its matches to the request's character set,
        # as DCMTK's dcmqrscp does, then returns every character.
        _set_charset(encoded, target or charset_terms(peer.default_charset) or [UTF8_CHARSET])
    else:
        _set_charset(encoded, [])
    return encoded


def _fit_keys(dataset: Dataset, codecs: list[str]) -> bool:
    """Make every key of `dataset` encodable with `codecs`; return True if any is not ASCII."""
    needs_charset = False
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                needs_charset |= _fit_keys(item, codecs)
            continue
        if element.VR not in CHARSET_VRS or element.is_empty:
            continue
        text = _joined_text(element)
        if text.isascii():
            continue
        # Every VR that (0008,0005) applies to also allows wild cards
        # (PS3.4 C.2.2.2.4), so "?" can always stand in for a character.
        fitted = "".join(c if _encodable(c, codecs) else "?" for c in text)
        if fitted != text:
            element.value = fitted
        needs_charset |= not fitted.isascii()
    return needs_charset


# --- matches from peers ---------------------------------------------------------


def decode_match(peer: PeerSettings, match: Dataset) -> Dataset:
    """Return `match` with every text value decoded, using the declared or default charset.

    The result contains plain str values only, so that nothing of the peer's
    original bytes is written back when the response is encoded. Its
    (0008,0005) names the character set the peer's bytes were read with.
    """
    declared = declared_charset(match)
    terms = declared or charset_terms(peer.default_charset)
    # Without a declared character set, pydicom has read any value that was
    # already accessed as Latin-1, so such values are read again with `terms`.
    decoded = _decode_dataset(match, terms, redecode=not declared)
    _set_charset(decoded, terms)
    if not declared and not terms and _has_non_ascii(decoded):
        _warn_undeclared(peer)
    return decoded


def _has_non_ascii(dataset: Dataset) -> bool:
    for element in dataset:
        if element.VR == "SQ":
            if any(_has_non_ascii(item) for item in element.value or []):
                return True
        elif element.VR in CHARSET_VRS and not element.is_empty and not _joined_text(element).isascii():
            return True
    return False


def _warn_undeclared(peer: PeerSettings) -> None:
    """Log once per peer that it sent non-ASCII bytes without (0008,0005)."""
    with _warned_lock:
        if peer.name in _warned_peers:
            return
        _warned_peers.add(peer.name)
    log.warning(
        "peer_charset_undeclared", peer=peer.name, peer_ae_title=peer.ae_title,
        reason="a match has non-ASCII text but no Specific Character Set (0008,0005), so it was read as Latin-1",
        fix="set default_charset for this peer to the character set it stores",
    )


def _decode_dataset(source: Dataset, terms: list[str], *, redecode: bool) -> Dataset:
    own_terms = declared_charset(source)
    if own_terms and own_terms != terms:
        terms, redecode = own_terms, False
    encodings = _pydicom_encodings(terms)
    target = Dataset()
    for tag in list(source.keys()):
        if tag == SPECIFIC_CHARACTER_SET_TAG:
            continue
        element = source.get_item(tag)
        if isinstance(element, RawDataElement):
            element = convert_raw_data_element(element, encoding=encodings, ds=source)
        elif redecode and element.VR in CHARSET_VRS:
            element = _redecoded(element, encodings)
        target.add(_plain(element, terms, redecode))
    return target


def _redecoded(element: DataElement, encodings: list[str]) -> DataElement:
    """Read a value that pydicom already decoded as Latin-1 again with `encodings`."""
    if element.is_empty:
        return element
    original = _joined_text(element).encode(_PYDICOM_DEFAULT_CODEC)
    raw = RawDataElement(
        element.tag, element.VR, len(original), original, 0, False, True, True, False
    )
    return convert_raw_data_element(raw, encoding=encodings)


def _plain(element: DataElement, terms: list[str], redecode: bool) -> DataElement:
    """Return `element` with str values in place of PersonName, and decoded items."""
    if element.VR == "SQ":
        items = [_decode_dataset(item, terms, redecode=redecode) for item in element.value or []]
        return DataElement(element.tag, "SQ", items)
    if element.VR == "PN" and not element.is_empty:
        return DataElement(element.tag, "PN", _joined_text(element))
    return element


# --- responses to workstations --------------------------------------------------


def encode_response(response: Dataset, request_charset: list[str]) -> Dataset:
    """Return `response` with (0008,0005) stating the character set its values need.

    That is the request's character set when it can encode every value, or
    else ISO_IR 192. A response whose values are all ASCII declares the
    request's character set, or nothing when the request declared none.
    """
    encoded = deepcopy(response)
    _remove_nested_charsets(encoded)
    texts = list(_text_values(encoded))
    request_terms = charset_terms(request_charset)
    if all(text.isascii() for text in texts):
        _set_charset(encoded, request_terms)
    elif request_terms and all(can_encode(text, request_terms) for text in texts):
        _set_charset(encoded, request_terms)
    else:
        _set_charset(encoded, [UTF8_CHARSET])
    return encoded


def _text_values(dataset: Dataset) -> Iterator[str]:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _text_values(item)
        elif element.VR in CHARSET_VRS and not element.is_empty:
            yield _joined_text(element)


# --- helpers --------------------------------------------------------------------


def _joined_text(element: DataElement) -> str:
    """Return the value of a text element as one string, values joined with backslashes."""
    value = element.value
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(item) for item in value)
    return str(value)


def _set_charset(dataset: Dataset, terms: Iterable[str]) -> None:
    terms = list(terms)
    if terms and terms[0] in _MULTI_BYTE_ISO_2022_TERMS:
        # A multi-byte ISO 2022 set can't be the first value of (0008,0005),
        # whose empty first value means ASCII.
        terms.insert(0, "")
    if not terms:
        if SPECIFIC_CHARACTER_SET_TAG in dataset:
            del dataset[SPECIFIC_CHARACTER_SET_TAG]
        return
    dataset.SpecificCharacterSet = terms[0] if len(terms) == 1 else terms


def _remove_nested_charsets(dataset: Dataset) -> None:
    """Remove (0008,0005) from sequence items, so that they use the top-level one."""
    for element in dataset:
        if element.VR != "SQ":
            continue
        for item in element.value or []:
            if SPECIFIC_CHARACTER_SET_TAG in item:
                del item[SPECIFIC_CHARACTER_SET_TAG]
            _remove_nested_charsets(item)


def _codecs(terms: list[str]) -> list[str]:
    """Return the Python codecs of `terms`, with ASCII for the default repertoire.

    A term that pydicom does not know adds no codec, so its characters count
    as not encodable.
    """
    codecs = []
    for term in terms or [""]:
        if term in _ASCII_TERMS:
            codecs.append("ascii")
        elif term in python_encoding:
            codecs.append(python_encoding[term])
    return codecs


def _pydicom_encodings(terms: list[str]) -> list[str]:
    """Return the encodings that pydicom decodes `terms` with.

    pydicom warns about an unknown term and falls back to its default, Latin-1.
    """
    return convert_encodings(terms or ["ISO_IR 6"])


def _encodable(character: str, codecs: list[str]) -> bool:
    if character.isascii():
        return True
    for codec in codecs:
        if codec == "ascii":
            continue
        try:
            character.encode(codec)
        except UnicodeEncodeError:
            continue
        return True
    return False

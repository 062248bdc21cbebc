"""The SCU side: one association to one peer PACS, which C-FIND, C-MOVE and C-GET share.

PeerFind (peer_find.py), PeerMove (peer_move.py) and PeerGet (peer_get.py)
build on PeerCall, whose _exchange catches every exception of a peer call.
Each call returns an outcome that names what went wrong, so the caller can
log it once and send the workstation a DICOM status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from yicrouter.config import PeerSettings
from yicrouter.contexts import context_list
from yicrouter.logs import get_logger
from yicrouter.net import TUNING_HANDLERS
from yicrouter.reactor import resume_reactor

log = get_logger(__name__)


ASSOCIATION_FAILED = "association failed: peer unreachable or aborted"


class PeerError(Exception):
    """Raised inside the peer call modules when a peer refuses, aborts or times out."""


def _make_ae(local_ae_title: str, peer: PeerSettings, max_pdu: int) -> AE:
    ae = AE(ae_title=local_ae_title)
    ae.connection_timeout = peer.connect_timeout
    ae.acse_timeout = peer.acse_timeout
    ae.dimse_timeout = peer.dimse_timeout
    ae.network_timeout = max(peer.dimse_timeout, peer.acse_timeout)
    ae.maximum_pdu_size = max_pdu
    return ae


class PeerCall:
    """One association to one peer, which another thread may abort."""

    def __init__(self, peer: PeerSettings, local_ae_title: str, max_pdu: int) -> None:
        self.peer = peer
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._assoc: Association | None = None
        self._lock = threading.Lock()
        self.aborted = False
        # Called from pynetdicom's thread as soon as the first association
        # ends before any A-ASSOCIATE response (see _note_failed_association).
        self.on_association_failed: Callable[[str], None] | None = None

    def _associate(self, sop_class_uid: str) -> Association:
        return self._associate_contexts([build_context(sop_class_uid)])

    def _associate_contexts(
        self,
        contexts: list[PresentationContext],
        ext_neg: list[Any] | None = None,
        evt_handlers: list[Any] | None = None,
    ) -> Association:
        """Open an association that proposes `contexts`; raise PeerError when it fails."""
        ae = _make_ae(self._local_ae_title, self.peer, self._max_pdu)
        assoc = ae.associate(
            self.peer.host, self.peer.port, contexts=context_list(contexts), ae_title=self.peer.ae_title,
            ext_neg=ext_neg,
            evt_handlers=[*TUNING_HANDLERS, (evt.EVT_ABORTED, self._note_failed_association),
                          *(evt_handlers or [])],
        )
        with self._lock:
            self._assoc = assoc
            if self.aborted:
                assoc.abort()
        if assoc.is_rejected:
            raise PeerError("association rejected")
        if not assoc.is_established:
            raise PeerError(ASSOCIATION_FAILED)
        return assoc

    def _note_failed_association(self, event: Any) -> None:
        """Report at once that the call's first association ended before any A-ASSOCIATE response.

        When the TCP connection is refused, pynetdicom 3.0.4 aborts the
        association and then sleeps 0.1 s before associate() returns. A
        fan-out need not wait for that to know the peer is down. An abort
        after the A-ASSOCIATE-AC, for example one instead of an A-RELEASE-RP,
        is not reported here.
        """
        answered = event.assoc.acceptor.primitive is not None
        first = self._assoc is None
        if self.on_association_failed is not None and first and not answered and not self.aborted:
            self.on_association_failed(ASSOCIATION_FAILED)

    def abort(self) -> None:
        """Abort the association from any thread; the running call then ends."""
        with self._lock:
            self.aborted = True
            if self._assoc is not None and self._assoc.is_established:
                self._assoc.abort()

    def _exchange(
        self,
        sop_class_uid: str,
        exchange: Callable[[Association], None],
        connect: Callable[[], Association] | None = None,
    ) -> str | None:
        """Associate, run `exchange`, then release; return what went wrong, or None.

        `connect` opens the association instead of the default one with a
        single presentation context for `sop_class_uid`.
        """
        try:
            assoc = connect() if connect is not None else self._associate(sop_class_uid)
        except PeerError as exc:
            return str(exc)
        except Exception as exc:  # pynetdicom raises many types, e.g. for an unresolvable host
            log.exception("peer_call_error", peer=self.peer.name, peer_ae_title=self.peer.ae_title)
            return f"association failed: {type(exc).__name__}: {exc}"
        try:
            exchange(assoc)
            return None
        except PeerError as exc:
            return "aborted by the router" if self.aborted else str(exc)
        except Exception as exc:  # pynetdicom and pydicom raise many types
            log.exception("peer_call_error", peer=self.peer.name, peer_ae_title=self.peer.ae_title)
            return f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            resume_reactor(assoc)
            if assoc.is_established:
                assoc.release()


def context_id(assoc: Association, sop_class_uid: str) -> int:
    """Return the ID of the accepted presentation context for `sop_class_uid`."""
    return next(
        int(cx.context_id or 1) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class_uid
    )

"""C-GET SCP (PS3.4 C.4.3): retrieve from the peer and send back on the requester's association.

The router serves C-GET with its own loop, as it does C-MOVE: pynetdicom's
built-in C-GET SCP (3.0.4) needs the number of sub-operations before the
first instance, which a relay does not know. Each instance goes back as a
C-STORE sub-operation on the requester's association as soon as the peer has
delivered it, with the same live counts and final statuses as C-MOVE.

The requester can take only the SOP Classes for which it proposed SCP/SCU
Role Selection with the SCP role (PS3.7 D.3.3.4). Instances of other SOP
Classes are failed sub-operations, logged once per SOP Class and request.

Durability: a C-GET has no destination to retry later, because its instances
may go only over the requester's association. Received instances are spooled
so they stream through without being held in memory, but they get no
retry-queue rows. Each spool file is deleted once its C-STORE has
ended, failed or not, and the final response counts every failure.
Start-up deletes the spool folders of C-GETs that a stopped router left.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_GET
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.forwarder import ForwardResult
from yicrouter.logs import get_logger
from yicrouter.moves import ReceivedInstance
from yicrouter.scp.common import RouterServices
from yicrouter.scp.retrieve import (
    GET,
    RetrieveResponder,
    check_requester,
    finish,
    locate,
    new_job,
    parse,
    reject,
    run_relay,
    serve,
)
from yicrouter.transcode import Payload, prepare

log = get_logger(__name__)


class GetSender:
    """Sends instances as C-STORE sub-operations on the requester's own association."""

    def __init__(self, assoc: Any, log_context: dict[str, Any]) -> None:
        self._assoc = assoc
        self._log = log.bind(**log_context)
        self._message_id = 0
        self._refused_sop_classes: set[str] = set()

    def send(self, instance: ReceivedInstance) -> ForwardResult:
        contexts = self._scu_contexts(instance.sop_class_uid)
        if not contexts:
            return self._no_role(instance)
        payload = prepare(instance, contexts)
        if not isinstance(payload, Payload):
            return ForwardResult(status.STORE_CANNOT_UNDERSTAND, payload.reason)
        return self._store(payload)

    def _scu_contexts(self, sop_class_uid: str) -> list[PresentationContext]:
        """Return the accepted contexts of a SOP Class in which the router may send C-STOREs."""
        return [
            cx for cx in self._assoc.accepted_contexts
            if cx.abstract_syntax == sop_class_uid and cx.as_scu
        ]

    def _no_role(self, instance: ReceivedInstance) -> ForwardResult:
        sop_class = instance.sop_class_uid
        proposed = any(cx.abstract_syntax == sop_class for cx in self._assoc.accepted_contexts)
        reason = (
            f"the requester did not propose the SCP role for SOP Class {sop_class}" if proposed
            else f"the requester proposed no presentation context for SOP Class {sop_class}"
        )
        if sop_class not in self._refused_sop_classes:
            self._refused_sop_classes.add(sop_class)
            self._log.warning("get_sop_class_not_accepted", sop_class_uid=sop_class, reason=reason)
        return ForwardResult(status.GET_OUT_OF_RESOURCES_SUBOPERATIONS, reason)

    def _store(self, payload: Payload) -> ForwardResult:
        data: str | Dataset
        if isinstance(payload.data, Dataset):
            data = payload.data
            # pynetdicom chooses the presentation context by this element.
            if getattr(data, "file_meta", None) is None:
                data.file_meta = FileMetaDataset()
            data.file_meta.TransferSyntaxUID = UID(payload.transfer_syntax)
        else:
            data = str(payload.data)
        self._message_id = self._message_id % 65535 + 1
        try:
            # This runs in the association's reactor thread, which the router
            # paused for the C-GET, so no reactor can take the response.
            rsp = self._assoc.send_c_store(data, msg_id=self._message_id)
        except (ValueError, AttributeError, RuntimeError) as exc:
            return ForwardResult(status.STORE_CANNOT_UNDERSTAND, f"C-STORE not sent: {exc}")
        if "Status" not in rsp:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, "no C-STORE response from the requester")
        return ForwardResult(int(rsp.Status))


def serve_get(assoc: Any, request: C_GET, context: PresentationContext, services: RouterServices) -> None:
    """Serve one C-GET request; every path ends with exactly one final response."""
    serve(assoc, request, context, services, GET, _serve)


def _serve(responder: RetrieveResponder, services: RouterServices, log_context: dict[str, Any],
           started: float) -> None:
    requester = check_requester(responder, services, log_context)
    if requester is None:
        return
    query = parse(responder, log_context)
    if query is None:
        return
    if not _accepts_any_instance(responder.assoc):
        # Without a single context in which the router may send C-STOREs,
        # every sub-operation would fail, so no peer is contacted at all.
        reject(responder, log_context, status.GET_OUT_OF_RESOURCES_SUBOPERATIONS,
               "the requester proposed the SCP role in no accepted presentation context",
               "no presentation context with the SCP role for the requester")
        return
    peers = locate(responder, query, services, log_context)
    if not peers:
        return

    job = new_job(responder, services, log_context, requester, query, durable=False)
    sender = GetSender(responder.assoc, log_context)
    result = run_relay(job, peers, responder, sender, services, log_context)
    finish(responder, result, log_context, started)


def _accepts_any_instance(assoc: Any) -> bool:
    """Return True when the requester took the SCP role in any accepted presentation context (PS3.7 D.3.3.4)."""
    return any(cx.as_scu for cx in assoc.accepted_contexts)

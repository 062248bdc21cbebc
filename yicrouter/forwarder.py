"""The router's own association to a Move Destination, fed one instance at a time.

The association is opened when the first instance arrives, with presentation
contexts for the SOP Classes and transfer syntaxes actually seen. When an
instance needs a context that was not proposed, the association is released
and opened again with the wider set. Instances whose transfer syntax was
accepted go out as the bytes received, read from disk in PDU-sized chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from yicrouter import status
from yicrouter.config import WorkstationSettings
from yicrouter.logs import get_logger
from yicrouter.moves import ReceivedInstance
from yicrouter.net import TUNING_HANDLERS
from yicrouter.reactor import pause_reactor, resume_reactor

log = get_logger(__name__)

# PS3.8 9.3.2.2: at most 128 presentation contexts in one A-ASSOCIATE-RQ.
MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Retired in PS3.5 since 2004; the router never proposes it (PS3.5 A.3).
_NEVER_PROPOSED = {ExplicitVRBigEndian, *_UNCOMPRESSED}


@dataclass(frozen=True)
class ForwardResult:
    status: int
    reason: str | None = None


class Forwarder:
    """Send received instances to one destination over one owned association."""

    def __init__(
        self,
        destination: WorkstationSettings,
        local_ae_title: str,
        max_pdu: int,
        originator: tuple[str, int],
        log_context: dict[str, object],
    ) -> None:
        self.destination = destination
        self._local_ae_title = local_ae_title
        self._max_pdu = max_pdu
        self._originator = originator
        self._assoc: Association | None = None
        self._wanted: dict[str, set[str]] = {}
        self._message_id = 0
        self._unreachable: str | None = None
        self._log = log.bind(**{"destination_ae_title": destination.ae_title, **log_context})

    def send(self, instance: ReceivedInstance, originator: tuple[str, int] | None = None) -> ForwardResult:
        """Send one instance and return its C-STORE status.

        A refused, unreachable or silent destination gives a failure status.

        `originator` overrides the Move Originator AE Title and Message ID
        given at construction, for instances of several moves on one association.
        """
        if originator is not None:
            self._originator = originator
        if self._unreachable is not None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, self._unreachable)
        self._want(instance)
        assoc = self._association_for(instance)
        if assoc is None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, self._unreachable)
        result = self._store(assoc, instance)
        if result is None:
            # pynetdicom 3.0.4 can lose a C-STORE response under load; the
            # association is then unusable, so abort it and send once more.
            self._log.warning("forward_response_lost", sop_instance_uid=instance.sop_instance_uid)
            self._drop_association(abort=True)
            assoc = self._association_for(instance)
            result = self._store(assoc, instance) if assoc is not None else None
        if result is None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, "no C-STORE response from destination")
        return result

    def close(self) -> None:
        self._drop_association(abort=False)

    def _want(self, instance: ReceivedInstance) -> None:
        self._wanted.setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax)

    def _contexts(self) -> list[PresentationContext]:
        contexts: list[PresentationContext] = []
        for sop_class, syntaxes in self._wanted.items():
            for syntax in sorted(syntaxes - _NEVER_PROPOSED):
                contexts.append(build_context(sop_class, [syntax]))
            contexts.append(build_context(sop_class, list(_UNCOMPRESSED)))
        return contexts[:MAX_CONTEXTS]

    def _has_context(self, assoc: Association, instance: ReceivedInstance) -> bool:
        return any(
            cx.abstract_syntax == instance.sop_class_uid
            and cx.transfer_syntax[0] == instance.transfer_syntax
            for cx in assoc.accepted_contexts
        )

    def _was_proposed(self, assoc: Association, instance: ReceivedInstance) -> bool:
        for cx in assoc.requestor.requested_contexts:
            if cx.abstract_syntax == instance.sop_class_uid and instance.transfer_syntax in cx.transfer_syntax:
                return True
        return False

    def _association_for(self, instance: ReceivedInstance) -> Association | None:
        assoc = self._assoc
        if assoc is not None and assoc.is_established:
            if self._has_context(assoc, instance) or self._was_proposed(assoc, instance):
                return assoc
            self._drop_association(abort=False)
        return self._open()

    def _open(self) -> Association | None:
        ae = AE(ae_title=self._local_ae_title)
        ae.connection_timeout = self.destination.connect_timeout
        ae.acse_timeout = self.destination.acse_timeout
        ae.dimse_timeout = self.destination.dimse_timeout
        ae.network_timeout = max(self.destination.dimse_timeout, self.destination.acse_timeout)
        ae.maximum_pdu_size = self._max_pdu
        assoc = ae.associate(
            self.destination.host, self.destination.port, contexts=self._contexts(),
            ae_title=self.destination.ae_title, evt_handlers=TUNING_HANDLERS,
        )
        if not assoc.is_established:
            self._unreachable = (
                "destination rejected the association" if assoc.is_rejected
                else "destination unreachable or aborted the association"
            )
            self._log.warning(
                "destination_association_failed",
                destination_address=f"{self.destination.host}:{self.destination.port}",
                reason=self._unreachable,
            )
            return None
        self._assoc = assoc
        return assoc

    def _drop_association(self, abort: bool) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None or not assoc.is_established:
            return
        if abort:
            assoc.abort()
        else:
            assoc.release()

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 65535 + 1
        return self._message_id

    def _store(self, assoc: Association, instance: ReceivedInstance) -> ForwardResult | None:
        """Send one C-STORE; return None when no response came back."""
        payload = self._payload(assoc, instance)
        if isinstance(payload, ForwardResult):
            return payload
        originator_ae, originator_id = self._originator
        pause_reactor(assoc)
        try:
            rsp = assoc.send_c_store(
                payload, msg_id=self._next_message_id(),
                originator_aet=originator_ae, originator_id=originator_id,
            )
        except (ValueError, AttributeError, RuntimeError) as exc:
            resume_reactor(assoc)
            return ForwardResult(status.STORE_CANNOT_UNDERSTAND, f"C-STORE not sent: {exc}")
        if "Status" not in rsp:
            return None
        return ForwardResult(int(rsp.Status))

    def _payload(self, assoc: Association, instance: ReceivedInstance) -> "str | Dataset | ForwardResult":
        if self._has_context(assoc, instance):
            return str(instance.path)
        if instance.transfer_syntax in _UNCOMPRESSED and self._accepts_uncompressed(assoc, instance):
            # Implicit and Explicit VR Little Endian convert into each other
            # without loss, so pynetdicom may re-encode the decoded data set.
            try:
                return dcmread(instance.path)
            except Exception as exc:  # pydicom raises many types on malformed data
                return ForwardResult(status.STORE_CANNOT_UNDERSTAND, f"instance could not be decoded: {exc}")
        # TODO: decode compressed and Big Endian instances and send them in an
        # accepted uncompressed transfer syntax; until then they fail here.
        reason = (
            f"destination accepted no presentation context for SOP Class "
            f"{instance.sop_class_uid} with transfer syntax {instance.transfer_syntax}"
        )
        return ForwardResult(status.STORE_CANNOT_UNDERSTAND, reason)

    def _accepts_uncompressed(self, assoc: Association, instance: ReceivedInstance) -> bool:
        return any(
            cx.abstract_syntax == instance.sop_class_uid and cx.transfer_syntax[0] in _UNCOMPRESSED
            for cx in assoc.accepted_contexts
        )

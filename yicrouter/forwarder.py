"""The router's own associations to a Move Destination, fed one instance at a time.

An association is opened when the first instance that needs it arrives, with
presentation contexts for the SOP Classes and transfer syntaxes actually seen
(see transcode.proposed_contexts). When those need more than 128 contexts,
the SOP Classes are spread over two or more associations to the same
destination, and each instance goes over the one that carries its SOP Class.
Only one of them is open at a time, because some destinations, storescp
without --fork among them, serve one association at a time. When an
instance needs a context that was not proposed, the association that
carries its SOP Class is released and opened again with the wider set.
Instances whose transfer syntax was accepted go out as the bytes received,
read from disk in PDU-sized chunks. The others are decoded and sent in an
accepted uncompressed transfer syntax (transcode.prepare).
"""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from yicrouter import status, transcode
from yicrouter.config import WorkstationSettings
from yicrouter.contexts import context_list
from yicrouter.logs import get_logger
from yicrouter.moves import ReceivedInstance
from yicrouter.net import TUNING_HANDLERS
from yicrouter.reactor import pause_reactor, resume_reactor
from yicrouter.send_bounds import bound_sending

log = get_logger(__name__)


@dataclass(frozen=True)
class ForwardResult:
    status: int
    reason: str | None = None


class Forwarder:
    """Send received instances to one destination over the associations this object owns."""

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
        self._wanted: dict[str, set[str]] = {}
        # The contexts to propose on each association, from transcode.proposed_contexts().
        self._plan: list[list[PresentationContext]] = []
        # The open association and the index of its contexts in the plan.
        self._assoc: Association | None = None
        self._assoc_index = 0
        # Plan indexes above 0 whose opening was logged at INFO already.
        self._reported_indexes: set[int] = set()
        # (SOP Class UID, transfer syntax) pairs whose unsendable instances
        # were logged at WARNING already. Later ones go to DEBUG.
        self._reported_unsendable: set[tuple[str, str]] = set()
        self._message_id = 0
        self._unreachable: str | None = None
        self._log = log.bind(**{"destination_ae_title": destination.ae_title, **log_context})

    def send(self, instance: ReceivedInstance, originator: tuple[str, int] | None = None) -> ForwardResult:
        """Send one instance and return its C-STORE status.

        A refused, unreachable or silent destination gives a failure status,
        and so does an instance that cannot be sent in any accepted transfer syntax.

        `originator` overrides the Move Originator AE Title and Message ID
        given at construction, for instances of several moves on one association.
        """
        if originator is not None:
            self._originator = originator
        if self._unreachable is not None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, self._unreachable)
        self._want(instance)
        index = self._plan_index(instance.sop_class_uid)
        assoc = self._association(index)
        if assoc is None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, self._unreachable)
        result = self._store(assoc, instance)
        if result is None:
            # pynetdicom 3.0.4 can lose a C-STORE response under load; the
            # association is then unusable, so abort it and send once more.
            self._log.warning("forward_response_lost", sop_instance_uid=instance.sop_instance_uid)
            self._drop_association(abort=True)
            assoc = self._association(index)
            result = self._store(assoc, instance) if assoc is not None else None
        if result is None:
            return ForwardResult(status.STORE_OUT_OF_RESOURCES, "no C-STORE response from destination")
        return result

    @property
    def unreachable_reason(self) -> str | None:
        """Why the destination's association failed, or None while it has not failed."""
        return self._unreachable

    def close(self) -> None:
        self._drop_association(abort=False)

    def _want(self, instance: ReceivedInstance) -> None:
        """Add the instance's SOP Class and transfer syntax, and re-plan the contexts if they are new.

        The open association is released when its contexts changed, so the
        next instance opens it again with the new contexts.

        NOTE: each new SOP Class therefore costs one more association, so a
        study whose 70 SOP Classes arrive one after another opens 71 in turn.
        """
        syntaxes = self._wanted.setdefault(instance.sop_class_uid, set())
        if instance.transfer_syntax in syntaxes:
            return
        syntaxes.add(instance.transfer_syntax)
        plan = transcode.proposed_contexts(self._wanted)
        index = self._assoc_index
        if self._assoc is not None and (
            index >= len(plan) or _signature(plan[index]) != _signature(self._plan[index])
        ):
            self._drop_association(abort=False)
        self._plan = plan

    def _plan_index(self, sop_class_uid: str) -> int:
        for index, contexts in enumerate(self._plan):
            if any(context.abstract_syntax == sop_class_uid for context in contexts):
                return index
        raise LookupError(f"SOP Class {sop_class_uid} is missing from the planned contexts")

    def _association(self, index: int) -> Association | None:
        """Return the established association for plan `index`, after releasing any other."""
        if self._assoc is not None and self._assoc.is_established and self._assoc_index == index:
            return self._assoc
        self._drop_association(abort=False)
        return self._open(index)

    def _open(self, index: int) -> Association | None:
        ae = AE(ae_title=self._local_ae_title)
        ae.connection_timeout = self.destination.connect_timeout
        ae.acse_timeout = self.destination.acse_timeout
        ae.dimse_timeout = self.destination.dimse_timeout
        ae.network_timeout = max(self.destination.dimse_timeout, self.destination.acse_timeout)
        ae.maximum_pdu_size = self._max_pdu
        contexts = self._plan[index]
        assoc = ae.associate(
            self.destination.host, self.destination.port, contexts=context_list(contexts),
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
        bound_sending(assoc)
        if index > 0:
            level = "debug" if index in self._reported_indexes else "info"
            self._reported_indexes.add(index)
            getattr(self._log, level)(
                "destination_association_added", association_number=index + 1,
                contexts=len(contexts), sop_classes=len({context.abstract_syntax for context in contexts}),
            )
        self._assoc, self._assoc_index = assoc, index
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
        payload = transcode.prepare(instance, assoc.accepted_contexts)
        if isinstance(payload, transcode.Unsendable):
            self._report_unsendable(instance, payload.reason)
            return ForwardResult(status.STORE_CANNOT_UNDERSTAND, payload.reason)
        if payload.converted:
            self._log.debug(
                "instance_transcoded", sop_instance_uid=instance.sop_instance_uid,
                transfer_syntax=instance.transfer_syntax, sent_transfer_syntax=payload.transfer_syntax,
            )
        originator_ae, originator_id = self._originator
        pause_reactor(assoc)
        try:
            rsp = assoc.send_c_store(
                payload.data, msg_id=self._next_message_id(),
                originator_aet=originator_ae, originator_id=originator_id,
            )
        except (ValueError, AttributeError, RuntimeError) as exc:
            resume_reactor(assoc)
            return ForwardResult(status.STORE_CANNOT_UNDERSTAND, f"C-STORE not sent: {exc}")
        if "Status" not in rsp:
            return None
        return ForwardResult(int(rsp.Status))

    def _report_unsendable(self, instance: ReceivedInstance, reason: str) -> None:
        key = (instance.sop_class_uid, instance.transfer_syntax)
        level = "debug" if key in self._reported_unsendable else "warning"
        self._reported_unsendable.add(key)
        getattr(self._log, level)(
            "instance_unsendable", sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid, transfer_syntax=instance.transfer_syntax, reason=reason,
        )


def _signature(contexts: list[PresentationContext]) -> list[tuple[str, tuple[str, ...]]]:
    """Return what identifies a list of proposed contexts: SOP Classes and transfer syntaxes, in order."""
    return [(str(context.abstract_syntax), tuple(context.transfer_syntax)) for context in contexts]

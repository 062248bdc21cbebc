"""C-STORE SCP: receive a peer's sub-operation and hand it to its C-MOVE or C-GET job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import peewee
from pydicom import dcmread
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag

from yicrouter import retry_queue, status
from yicrouter.logs import get_logger
from yicrouter.moves import FINISHED, OPEN, InstanceKeys, MoveJob, ReceivedInstance
from yicrouter.queue_book import release_rows
from yicrouter.scp.common import RouterServices, association_log_context

log = get_logger(__name__)

# Seconds beyond the move's own deadline that its queue rows stay leased, so
# the delivery job does not take them while the move may still forward them.
_LEASE_MARGIN_SECONDS = 60.0

_KEY_TAGS = [Tag("PatientID"), Tag("StudyInstanceUID"), Tag("SeriesInstanceUID")]
_LAST_KEY_TAG = Tag("SeriesInstanceUID")


def _after_keys(tag: BaseTag, vr: str | None, length: int) -> bool:
    return bool(tag > _LAST_KEY_TAG)


def read_keys(path: Path, sop_instance_uid: str) -> InstanceKeys:
    """Read the patient, study and series keys from a received file's header.

    Reading stops at the first element after Series Instance UID, which
    saves about a quarter of the time of reading the whole header. A file
    whose elements are out of tag order may hide a key past that point, so
    a missing key is looked for in the whole header.
    """
    with open(path, "rb") as file:
        header = read_partial(file, stop_when=_after_keys, specific_tags=list(_KEY_TAGS))
    if any(tag not in header for tag in _KEY_TAGS):
        header = dcmread(path, stop_before_pixels=True, specific_tags=list(_KEY_TAGS))

    def text(keyword: str) -> str:
        return str(header.get(keyword, "") or "").strip()

    return InstanceKeys(text("PatientID"), text("StudyInstanceUID"), text("SeriesInstanceUID"), sop_instance_uid)


def _enough_space(services: RouterServices, temporary: Path, context: dict[str, Any]) -> bool:
    """Return False, after removing the received file, when the spool is below its floor."""
    floor = services.config.router.spool_min_free_mb * 1024 * 1024
    try:
        free = services.spool.free_bytes()
    except OSError as exc:
        log.error("spool_unavailable", **context, error=str(exc))
        return False
    if free >= floor:
        return True
    temporary.unlink(missing_ok=True)
    log.error("spool_full", **context, free_mb=free // (1024 * 1024),
              spool_min_free_mb=services.config.router.spool_min_free_mb,
              reason="free space is below router.spool_min_free_mb, so the instance was refused")
    return False


def _record(instance: ReceivedInstance, job: MoveJob, services: RouterServices,
            context: dict[str, Any]) -> int | None:
    """Commit the instance's retry-queue row; return its id, or None when the database failed."""
    lease = (job.peer.move_deadline if job.peer is not None else 3600.0) + _LEASE_MARGIN_SECONDS
    try:
        entry_id, replaced = retry_queue.enqueue(
            sop_instance_uid=instance.sop_instance_uid, sop_class_uid=instance.sop_class_uid,
            transfer_syntax=instance.transfer_syntax, path=str(instance.path), size=instance.size,
            destination=job.destination.ae_title,
            originator=(job.requester_ae_title, job.requester_message_id),
            move_id=job.id, owner=job.queue_owner, lease_seconds=lease,
        )
    except peewee.PeeweeException as exc:
        log.error("queue_write_failed", **context, move_id=job.id, error=str(exc))
        return None
    if replaced is not None:
        services.spool.discard(Path(replaced))
    return entry_id


def handle_store(event: Any, services: RouterServices) -> int:
    """Handle EVT_C_STORE; pynetdicom has written the data set to a file already."""
    request = event.request
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "").strip()
    context = association_log_context(event.assoc) | {"sop_instance_uid": sop_instance_uid}
    temporary = Path(event.dataset_path)
    keys = _received_keys(services, temporary, sop_instance_uid, context)
    if isinstance(keys, int):
        return keys

    job = services.moves.claim(
        context["calling_ae_title"],
        request.MoveOriginatorApplicationEntityTitle,
        request.MoveOriginatorMessageID,
        keys,
    )
    if job is None:
        log.warning("store_unsolicited", **context, study_instance_uid=keys.study_uid,
                    reason="no running move expects this instance")
        return status.STORE_REFUSED_NOT_AUTHORIZED
    return _accept(event, temporary, job, services, context)


def handle_peer_get_store(event: Any, job: MoveJob, services: RouterServices) -> int:
    """Handle EVT_C_STORE on the router's own C-GET association to a peer.

    The association belongs to `job`, so the instance needs no matching by
    Move Originator; it must still be one that the job's identifier selects.
    """
    sop_instance_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
    peer = job.peer
    context = {
        "move_id": job.id, "peer": peer.name if peer else None,
        "peer_ae_title": peer.ae_title if peer else None, "sop_instance_uid": sop_instance_uid,
    }
    temporary = Path(event.dataset_path)
    keys = _received_keys(services, temporary, sop_instance_uid, context)
    if isinstance(keys, int):
        return keys
    if not job.covers(keys) or not job.begin_store():
        temporary.unlink(missing_ok=True)
        log.warning("store_unsolicited", **context, study_instance_uid=keys.study_uid,
                    reason="the retrieve has ended or does not select this instance")
        return status.STORE_REFUSED_NOT_AUTHORIZED
    job.received_uids.add(sop_instance_uid)
    return _accept(event, temporary, job, services, context)


def _received_keys(
    services: RouterServices, temporary: Path, sop_instance_uid: str, context: dict[str, Any]
) -> InstanceKeys | int:
    """Return the keys of a received instance, or the C-STORE failure status when it can't be kept."""
    if not _enough_space(services, temporary, context):
        return status.STORE_OUT_OF_RESOURCES
    keys = _read_keys_or_none(temporary, sop_instance_uid, context)
    if keys is None:
        return status.STORE_CANNOT_UNDERSTAND
    return keys


def _read_keys_or_none(temporary: Path, sop_instance_uid: str, context: dict[str, Any]) -> InstanceKeys | None:
    try:
        return read_keys(temporary, sop_instance_uid)
    except Exception as exc:  # pydicom raises many types on malformed data
        temporary.unlink(missing_ok=True)
        log.warning("store_rejected", **context, reason=f"data set could not be parsed: {exc}")
        return None


def _accept(event: Any, temporary: Path, job: MoveJob, services: RouterServices, context: dict[str, Any]) -> int:
    """Spool the instance, record its retry-queue row when the job has rows, and hand it to the relay.

    The job's C-STORE must have been begun with job.begin_store(); this ends it.
    """
    try:
        instance = _spool(event, temporary, job, services, context)
    except Exception:  # pynetdicom sends the peer a failure status, so the relay must not wait
        job.abandon_store()
        raise
    if instance is None:
        job.abandon_store()
        return status.STORE_OUT_OF_RESOURCES
    return _hand_over(instance, job, services, context)


def _spool(event: Any, temporary: Path, job: MoveJob, services: RouterServices,
           context: dict[str, Any]) -> ReceivedInstance | None:
    """Return the spooled instance with its committed row, or None when the disk or database failed."""
    request = event.request
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "").strip()
    try:
        size = temporary.stat().st_size
        path = services.spool.accept(temporary, job.spool_folder, sop_instance_uid)
    except OSError as exc:
        # pynetdicom deletes the temporary file only on the SCP side of an
        # association, not for C-STOREs within the router's own C-GET.
        temporary.unlink(missing_ok=True)
        log.error("spool_write_failed", **context, move_id=job.id, error=str(exc))
        return None

    instance = ReceivedInstance(
        path=path,
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=str(event.context.transfer_syntax),
        size=size,
    )
    if not job.durable:
        return instance
    entry_id = _record(instance, job, services, context)
    if entry_id is None:
        services.spool.discard(path)
        return None
    return replace(instance, entry_id=entry_id)


def _hand_over(instance: ReceivedInstance, job: MoveJob, services: RouterServices,
               context: dict[str, Any]) -> int:
    """Give the instance to the relay, or settle it here when the job closed while it was stored.

    The relay counted such an instance when it closed the job. A C-MOVE that
    finished keeps it, because the peer gets Success: its row goes to the
    delivery job. A cancelled job, or one without rows, refuses it.
    """
    state = job.hand_over(instance)
    context = context | {"move_id": job.id}
    if state == OPEN:
        log.debug("store_received", **context, bytes=instance.size)
        return status.SUCCESS
    if state == FINISHED and job.durable:
        log.info("store_queued_after_move", **context, entry_id=instance.entry_id,
                 reason="the move ended while the instance was being stored; the delivery job sends it")
        release_rows(job.queue_owner, context)
        return status.SUCCESS
    _drop(instance, services, context)
    log.warning("store_refused_after_move", **context, move_state=state,
                reason="the retrieve ended while the instance was being stored")
    return status.STORE_REFUSED_NOT_AUTHORIZED


def _drop(instance: ReceivedInstance, services: RouterServices, context: dict[str, Any]) -> None:
    """Delete the instance's row, if it has one, and its spool file."""
    if instance.entry_id:
        try:
            retry_queue.mark_delivered(instance.entry_id)
        except peewee.PeeweeException as exc:
            log.error("queue_write_failed", **context, entry_id=instance.entry_id, error=str(exc))
            return
    services.spool.discard(instance.path)

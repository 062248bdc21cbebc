"""The routing table: which peer holds which patient, study, series or instance.

Every C-FIND match is recorded here with the time it was last seen, and every
C-MOVE is routed from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import peewee
from pydicom.dataset import Dataset

from yicrouter.db import BaseModel, session


class Location(BaseModel):
    """One entity seen at one peer. Keys unknown at the match's level are ''."""

    peer = peewee.CharField()
    level = peewee.CharField()
    patient_id = peewee.CharField(default="")
    study_uid = peewee.CharField(default="")
    series_uid = peewee.CharField(default="")
    sop_instance_uid = peewee.CharField(default="")
    last_seen = peewee.DateTimeField()

    class Meta:
        indexes = (
            (("peer", "level", "patient_id", "study_uid", "series_uid", "sop_instance_uid"), True),
            (("study_uid",), False),
            (("series_uid",), False),
            (("sop_instance_uid",), False),
        )


_COLUMNS = {
    "PATIENT": Location.patient_id,
    "STUDY": Location.study_uid,
    "SERIES": Location.series_uid,
    "IMAGE": Location.sop_instance_uid,
}


@dataclass(frozen=True)
class Sighting:
    """One match from one peer, reduced to the keys the routing table stores."""

    peer: str
    level: str
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_instance_uid: str = ""

    @classmethod
    def from_match(cls, peer: str, level: str, match: Dataset) -> "Sighting":
        def text(keyword: str) -> str:
            return str(match.get(keyword, "") or "").strip()

        return cls(
            peer=peer,
            level=level,
            patient_id=text("PatientID"),
            study_uid=text("StudyInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            sop_instance_uid=text("SOPInstanceUID"),
        )


def record(sightings: list[Sighting], now: datetime | None = None) -> None:
    """Insert or refresh each sighting in one transaction."""
    if not sightings:
        return
    seen = now or datetime.now(timezone.utc)
    rows = [
        {
            "peer": s.peer,
            "level": s.level,
            "patient_id": s.patient_id,
            "study_uid": s.study_uid,
            "series_uid": s.series_uid,
            "sop_instance_uid": s.sop_instance_uid,
            "last_seen": seen,
        }
        for s in set(sightings)
    ]
    conflict_target = [
        Location.peer, Location.level, Location.patient_id,
        Location.study_uid, Location.series_uid, Location.sop_instance_uid,
    ]
    database = Location._meta.database
    with session(database), database.atomic():
        for start in range(0, len(rows), 200):
            (
                Location.insert_many(rows[start:start + 200])
                .on_conflict(conflict_target=conflict_target, update={Location.last_seen: seen})
                .execute()
            )


def peers_holding(level: str, values: list[str]) -> list[str]:
    """Return the peers that hold any of `values` at `level`, newest sighting first."""
    if not values:
        return []
    column = _COLUMNS[level]
    newest = peewee.fn.MAX(Location.last_seen)
    database = Location._meta.database
    with session(database):
        query = (
            Location.select(Location.peer, newest.alias("newest"))
            .where(column.in_(values))
            .group_by(Location.peer)
            .order_by(newest.desc())
        )
        return [row.peer for row in query]


def parent_uids(peer: str, series_uid: str = "", sop_instance_uid: str = "") -> dict[str, str]:
    """Return the StudyInstanceUID and SeriesInstanceUID recorded for an entity at `peer`.

    The newest sighting with a non-empty value wins. Keys never recorded are left out.
    """
    conditions = []
    if sop_instance_uid:
        conditions.append(Location.sop_instance_uid == sop_instance_uid)
    if series_uid:
        conditions.append(Location.series_uid == series_uid)
    found: dict[str, str] = {}
    database = Location._meta.database
    with session(database):
        for condition in conditions:
            rows = (
                Location.select(Location.study_uid, Location.series_uid)
                .where((Location.peer == peer) & condition)
                .order_by(Location.last_seen.desc())
            )
            for row in rows:
                if row.study_uid:
                    found.setdefault("StudyInstanceUID", row.study_uid)
                if row.series_uid:
                    found.setdefault("SeriesInstanceUID", row.series_uid)
    return found


def studies_of_patients(peer: str, patient_ids: list[str]) -> list[str]:
    """Return the Study Instance UIDs that the table has seen at `peer` for any of the Patient IDs."""
    if not patient_ids:
        return []
    database = Location._meta.database
    with session(database):
        rows = (
            Location.select(Location.study_uid)
            .where(
                (Location.peer == peer)
                & Location.patient_id.in_(patient_ids)
                & (Location.study_uid != "")
            )
            .distinct()
            .order_by(Location.study_uid)
        )
        return [row.study_uid for row in rows]

"""The routing table: what C-FIND records, and how C-MOVE uses it.

The session router keeps one routing table for the whole test session, so
tests that need a miss first delete the rows of their study from it, as an
administrator could with the sqlite3 shell.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import Region, Trust
from harness.dcmtk import StoreSCP, run_findscu, run_movescu
from harness.router import RouterProcess
from yicrouter import status
from yicrouter.demo.seed import SeedStudy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _database(router: RouterProcess) -> Path:
    return router.state_dir / "yicrouter.sqlite3"


def _rows(router: RouterProcess, study_uid: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(_database(router)) as connection:
        cursor = connection.execute(
            "SELECT peer, level, last_seen FROM location WHERE study_uid = ? ORDER BY peer, level",
            (study_uid,),
        )
        return list(cursor.fetchall())


def _forget(router: RouterProcess, study_uid: str) -> None:
    with sqlite3.connect(_database(router)) as connection:
        connection.execute("DELETE FROM location WHERE study_uid = ?", (study_uid,))


def _find_study(router: RouterProcess, study: SeedStudy) -> None:
    result = run_findscu(router.node, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
                         calling_ae="WS1")
    assert result.final_status == status.SUCCESS, result.describe()


def _move_study(router: RouterProcess, study: SeedStudy) -> int | None:
    result = run_movescu(router.node, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_uid},
                         calling_ae="WS1", timeout=120.0)
    return result.final_status


def _find_counts(region: Region) -> dict[str, int]:
    return {trust.name: trust.requests_seen("Find") for trust in region.trusts}


def _move_counts(region: Region) -> dict[str, int]:
    return {trust.name: trust.requests_seen("Move") for trust in region.trusts}


def _trust(region: Region, name: str) -> Trust:
    return {trust.name: trust for trust in region.trusts}[name]


def test_find_records_each_holder(region: Region, router: RouterProcess) -> None:
    shared = region.shared_study
    _forget(router, shared.study_uid)

    _find_study(router, shared)

    peers = {peer for peer, level, _ in _rows(router, shared.study_uid) if level == "STUDY"}
    assert peers == {"north", "east"}


def test_move_after_find_uses_table(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = _trust(region, "south").studies[0]
    _find_study(router, study)
    finds_before = _find_counts(region)

    final = _move_study(router, study)

    assert final == status.SUCCESS
    assert _find_counts(region) == finds_before, "the move sent a C-FIND although the table knew the study"
    ws1.wait_for_files(len(study.files))


def test_move_on_miss_locates_first(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    study = _trust(region, "east").studies[1]
    _forget(router, study.study_uid)
    finds_before = _find_counts(region)
    moves_before = _move_counts(region)

    final = _move_study(router, study)

    assert final == status.SUCCESS
    finds_after = _find_counts(region)
    for name, count in finds_before.items():
        assert finds_after[name] > count, f"{name} was not asked where the study is"
    moves_after = _move_counts(region)
    assert moves_after["east"] == moves_before["east"] + 1
    assert moves_after["north"] == moves_before["north"]
    assert moves_after["south"] == moves_before["south"]
    ws1.wait_for_files(len(study.files))
    assert {peer for peer, _, _ in _rows(router, study.study_uid)} == {"east"}


def test_move_of_unknown_study_succeeds_empty(region: Region, router: RouterProcess) -> None:
    moves_before = _move_counts(region)
    result = run_movescu(
        router.node, "WS1",
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.999999"},
        calling_ae="WS1",
    )
    assert result.final_status == status.SUCCESS
    assert result.completed in (0, None)
    assert _move_counts(region) == moves_before
    assert "no peer holds the requested data" in router.log_text()


def test_shared_study_moves_from_one_peer(region: Region, router: RouterProcess, ws1: StoreSCP) -> None:
    shared = region.shared_study
    _find_study(router, shared)
    moves_before = _move_counts(region)

    final = _move_study(router, shared)

    assert final == status.SUCCESS
    moves_after = _move_counts(region)
    extra_moves = sum(moves_after[name] - moves_before[name] for name in moves_before)
    assert extra_moves == 1
    ws1.wait_for_files(len(shared.files))

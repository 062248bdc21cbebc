"""Copies of presentation context lists that share their UID objects.

pynetdicom 3.0.4 deep-copies the acceptor's supported presentation contexts
for every association it accepts. A plain deep copy rebuilds every transfer
syntax UID, which for the router's 177 abstract syntaxes cost 70 to 100 ms
of CPU per association (see yicrouter/contexts.py and docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from harness.ports import free_port
from yicrouter.config import Config, RouterSettings, WorkstationSettings
from yicrouter.contexts import ContextList, context_list
from yicrouter.daemon import Router

WORKSTATION_AE = "CTXWS"


def _uid_ids(contexts: list[PresentationContext]) -> set[int]:
    return {id(uid) for context in contexts for uid in context.transfer_syntax}


def _served_contexts(router: Router) -> list[PresentationContext]:
    assert router._server is not None
    return router._server.contexts


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    config = Config(
        router=RouterSettings(bind="127.0.0.1", port=free_port(), state_dir=tmp_path / "state"),
        workstations=(WorkstationSettings(ae_title=WORKSTATION_AE, host="127.0.0.1", port=free_port()),),
    )
    running = Router(config)
    running.start()
    yield running
    running.stop()


def test_plain_deepcopy_rebuilds_every_uid(router: Router) -> None:
    """The fault: copy.deepcopy, as pynetdicom calls it, makes new UID objects."""
    supported = list(_served_contexts(router))
    duplicate = copy.deepcopy(supported)
    assert _uid_ids(duplicate).isdisjoint(_uid_ids(supported))


def test_copy_shares_only_uids() -> None:
    original = ContextList([PresentationContext()])
    original[0].abstract_syntax = Verification
    original[0].add_transfer_syntax("1.2.840.10008.1.2")
    duplicate = copy.deepcopy(original)
    assert isinstance(duplicate, ContextList)
    assert duplicate[0] is not original[0]
    assert duplicate[0].transfer_syntax[0] is original[0].transfer_syntax[0]
    duplicate[0].add_transfer_syntax("1.2.840.10008.1.2.1")
    duplicate[0].context_id = 3
    duplicate[0].result = 0x00
    assert original[0].transfer_syntax == ["1.2.840.10008.1.2"]
    assert original[0].context_id is None
    assert original[0].result is None


def test_context_list_keeps_a_context_list() -> None:
    contexts = ContextList()
    assert context_list(contexts) is contexts
    assert isinstance(context_list([]), ContextList)


def test_accepted_association_shares_uids(router: Router) -> None:
    ae = AE(ae_title=WORKSTATION_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", router.port, ae_title="YICROUTER")
    try:
        assert assoc.is_established
        [acceptor] = router.active_associations()
        copied = acceptor.acceptor.supported_contexts
        served = _served_contexts(router)
        assert isinstance(served, ContextList)
        assert len(copied) == len(served)
        assert _uid_ids(copied) <= _uid_ids(served)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()

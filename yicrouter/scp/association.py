"""The router's association acceptor, with its own C-MOVE and C-GET SCP loops.

pynetdicom's built-in C-MOVE and C-GET SCPs (3.0.4) need the number of
sub-operations before the first instance and take only decoded Datasets, and
its C-MOVE SCP opens the Move Destination association before any instance
is known. A relay has none of that in advance, and decoding every instance
costs time and memory. So the router's acceptor association hands C-MOVE
requests to `serve_move`, which owns the destination association, and C-GET
requests to `serve_get`, which sends on the requester's own association.
Both send the received bytes unchanged where the presentation context allows.
Every other request goes through pynetdicom as usual.

This overrides pynetdicom's private `Association._serve_request` and
`RequestHandler._create_association`, which is why setup.cfg pins
pynetdicom to 3.0.x; tests/test_association.py fails if they change shape.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from yicrouter.contexts import context_list
from yicrouter.scp.common import RouterServices
from yicrouter.scp.get import serve_get
from yicrouter.scp.move import serve_move
from yicrouter.scp.screen import reject_blank_ae_titles
from yicrouter.send_bounds import bound_sending

_association_ids = itertools.count(1)


class RouterAssociation(Association):
    """An acceptor association whose C-MOVE and C-GET requests the router serves itself."""

    router_services: RouterServices
    router_association_id: str

    # Message IDs of C-FIND requests whose C-CANCEL was filed before pynetdicom
    # started to serve them; see _serve_find.
    early_find_cancels: set[int]

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if isinstance(msg, C_FIND) and msg.is_valid_request:
            self._serve_find(msg, context_id)
            return
        if not (isinstance(msg, (C_MOVE, C_GET)) and msg.is_valid_request and context_id in self._accepted_cx):
            super()._serve_request(msg, context_id)
            return
        context = self._accepted_cx[context_id]
        # Forget C-CANCELs for other requests, and pause the reactor while the
        # SCP runs. pynetdicom's own SCPs forget every C-CANCEL here, but one
        # sent just after its request may have arrived already, because the
        # DUL thread files C-CANCELs at once and requests only via a queue.
        message_id = msg.MessageID
        self.dimse.cancel_req = {
            key: value for key, value in self.dimse.cancel_req.items() if key == message_id
        }
        self._is_paused = True
        try:
            if isinstance(msg, C_GET):
                serve_get(self, msg, context, self.router_services)
            else:
                serve_move(self, msg, context, self.router_services)
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}


    def _serve_find(self, msg: C_FIND, context_id: int) -> None:
        """Serve a C-FIND through pynetdicom, keeping a C-CANCEL that came first.

        The DUL thread files a C-CANCEL at once but queues requests, so a
        cancel sent just after its request can be filed before the request
        is served. pynetdicom 3.0.4 then clears it, and the C-FIND would run
        to the end, so the router notes it here for the C-FIND handler.
        """
        message_id = int(msg.MessageID or 0)
        if message_id in self.dimse.cancel_req:
            self.early_find_cancels.add(message_id)
        try:
            super()._serve_request(msg, context_id)
        finally:
            self.early_find_cancels.discard(message_id)


class RouterRequestHandler(RequestHandler):
    """Creates a RouterAssociation for each accepted connection."""

    server: "RouterServer"

    def handle(self) -> None:
        remote = f"{self.client_address[0]}:{self.client_address[1]}"
        if reject_blank_ae_titles(self.request, remote, self.ae.acse_timeout or 30.0):
            # pynetdicom's server leaves closing to the association, and
            # there is none for this connection.
            self.request.close()
            return
        super().handle()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # The association thread has not started yet, so changing the class
        # here is safe; RouterAssociation adds methods, not state.
        assoc.__class__ = RouterAssociation
        assoc.router_services = self.server.router_services  # type: ignore[attr-defined]
        assoc.router_association_id = f"a{next(_association_ids)}"  # type: ignore[attr-defined]
        assoc.early_find_cancels = set()  # type: ignore[attr-defined]
        bound_sending(assoc)
        return assoc


class RouterServer(ThreadedAssociationServer):
    router_services: RouterServices


def start_server(
    ae: AE,
    address: tuple[str, int],
    ae_title: str,
    services: RouterServices,
    evt_handlers: list[Any],
) -> RouterServer:
    """Start a non-blocking server on `address` that creates RouterAssociations."""
    server = ae.make_server(
        address, ae_title=ae_title, evt_handlers=evt_handlers,
        contexts=context_list(ae.supported_contexts),
        server_class=RouterServer, request_handler=RouterRequestHandler,
    )
    assert isinstance(server, RouterServer)
    server.router_services = services
    # start_server() registers its servers with the AE, and server.shutdown()
    # removes itself from that list, raising ValueError when it is missing.
    ae._servers.append(server)
    thread = threading.Thread(target=server.serve_forever, name="yicrouter-acceptor", daemon=True)
    thread.start()
    return server


__all__ = ["RouterAssociation", "RouterRequestHandler", "RouterServer", "start_server", "evt"]

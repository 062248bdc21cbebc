"""Router configuration: the TOML main file plus its `yicrouter.d/` drop-ins.

INTERFACE STUB: the loader below is to be replaced; the dataclasses are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RouterSettings:
    """The `[router]` table."""

    ae_title: str = "YICROUTER"
    bind: str = "0.0.0.0"
    port: int = 11112
    state_dir: Path = Path("/var/lib/yicrouter")
    # Maximum PDU length that the router advertises, in bytes.
    max_pdu: int = 262144
    log_level: str = "info"
    log_format: str = "console"


@dataclass(frozen=True)
class PeerSettings:
    """One `[[peer]]` table: a partner trust's PACS that the router queries."""

    name: str
    ae_title: str
    host: str
    port: int
    # Seconds to wait for the TCP connection.
    connect_timeout: float = 5.0
    # Seconds to wait for the A-ASSOCIATE-AC or A-RELEASE-RP.
    acse_timeout: float = 10.0
    # Seconds to wait for each DIMSE response (each Pending counts).
    dimse_timeout: float = 30.0
    # Seconds that one C-FIND to this peer may take in total.
    find_deadline: float = 10.0
    # Seconds that one C-MOVE from this peer may take in total.
    move_deadline: float = 3600.0
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class WorkstationSettings:
    """One `[[workstation]]` table: an allowed caller and Move Destination."""

    ae_title: str
    host: str
    port: int
    connect_timeout: float = 5.0
    acse_timeout: float = 10.0
    dimse_timeout: float = 30.0
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class Config:
    router: RouterSettings
    peers: tuple[PeerSettings, ...] = ()
    workstations: tuple[WorkstationSettings, ...] = ()
    files: tuple[Path, ...] = ()

    def peer_by_name(self, name: str) -> PeerSettings | None:
        return next((p for p in self.peers if p.name == name), None)

    def peer_by_ae_title(self, ae_title: str) -> PeerSettings | None:
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)

    def workstation_by_ae_title(self, ae_title: str) -> WorkstationSettings | None:
        wanted = ae_title.strip()
        return next((w for w in self.workstations if w.ae_title == wanted), None)


class ConfigError(Exception):
    """Raised when configuration files are invalid; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: Path) -> Config:
    raise NotImplementedError

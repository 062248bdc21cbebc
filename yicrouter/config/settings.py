"""Settings dataclasses that `load_config` builds, and the `Config` lookups."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

# Name of the SQLite file in state_dir when router.database is "".
DEFAULT_DATABASE_FILE_NAME: Final = "yicrouter.sqlite3"


@dataclass(frozen=True)
class RouterSettings:
    """The `[router]` table."""

    # The router's own AE title, which peers and workstations call.
    ae_title: str = "YICROUTER"
    # IP address that the router's SCP listens on.
    bind: str = "0.0.0.0"
    # TCP port that the router's SCP listens on.
    port: int = 11112
    # Folder for the queue and database. A relative path in the file is
    # stored joined to the main config file's folder.
    state_dir: Path = Path("/var/lib/yicrouter")
    # Maximum PDU length that the router advertises, in bytes.
    max_pdu: int = 262144
    # Free space, in MiB, below which the spool refuses new instances.
    spool_min_free_mb: int = 1024
    # One of LOG_LEVELS in values.py.
    log_level: str = "info"
    # One of LOG_FORMATS in values.py.
    log_format: str = "console"
    # peewee database URL, or "" for the SQLite file in state_dir. Left out of
    # repr, because a PostgreSQL URL may contain a password.
    database: str = field(default="", repr=False)
    # Whether Patient Name matching distinguishes upper and lower case, in the
    # router's own re-matching of every peer's matches. PS3.4 C.2.2.2.1
    # lets a Q/R SCP choose. It cannot widen what a case-sensitive peer returns.
    patient_name_case_sensitive: bool = False

    @property
    def database_url(self) -> str:
        """Database URL to open: `database`, or the SQLite file in state_dir when it is ""."""
        if self.database:
            return self.database
        # peewee opens the path after "sqlite:///", so an absolute state_dir
        # gives four slashes.
        return f"sqlite:///{self.state_dir / DEFAULT_DATABASE_FILE_NAME}"


@dataclass(frozen=True)
class QueueSettings:
    """The `[queue]` table: retries of the durable queue of outgoing instances."""

    # Seconds before the first retry of a failed delivery.
    retry_base: float = 30.0
    # Maximum seconds between two attempts. Later delays grow from retry_base
    # up to this value, which is at least retry_base.
    retry_max: float = 3600.0
    # Delivery attempts after which an instance becomes a dead letter.
    max_attempts: int = 20
    # Seconds after arrival at which an undelivered instance becomes a dead
    # letter. The default is 3 days.
    max_age: float = 259200.0
    # Seconds between two runs of the delivery job that looks for due instances.
    poll_interval: float = 5.0
    # Maximum number of instances that one run sends to one destination over
    # one association.
    batch_size: int = 100


@dataclass(frozen=True)
class PeerSettings:
    """One `[[peer]]` table: a partner trust's PACS that the router queries."""

    # Unique short name of the peer, used in logs and commands.
    name: str
    # The peer's AE title, stored without leading and trailing spaces.
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
    # "c-move": the peer sends the instances to the router as Move Destination.
    # "c-get": the peer sends them back on the router's own association.
    retrieve: str = "c-move"
    # Specific Character Set used to read the peer's matches that have no
    # (0008,0005); "" is the default repertoire (ASCII).
    default_charset: str = ""
    # Specific Character Set that the peer can match on. Query keys are
    # converted to it, with "?" for characters it cannot encode; "" sends the
    # workstation's keys unchanged.
    query_charset: str = ""
    # Whether every C-FIND identifier to the peer carries (0008,0005), even
    # when its keys are plain ASCII.
    always_send_charset: bool = False
    # The peer offers only the Study Root information model, so Patient Root
    # queries and retrieves are translated.
    study_root_only: bool = False
    # False when the peer mishandles zero-length (universal) keys, so the
    # router sends "*" for keys whose VR allows wildcards.
    universal_matching: bool = True
    # False when the peer rejects range or wildcard forms in DA, TM and DT
    # keys, so the router sends those keys empty and matches them itself.
    date_ranges: bool = True
    # Maximum number of matches that the peer returns for one C-FIND, or 0
    # for no limit. A full list may be truncated, so the router splits the
    # date range or returns 0xA700.
    max_matches: int = 0
    # Whether the peer supports combined date and time range matching, which
    # the router then negotiates with it (PS3.4 C.2.2.2.5).
    combined_datetime: bool = False
    # The peer rejects SERIES and IMAGE level requests that do not give every
    # parent UID, so the router fills them in first.
    needs_parent_uids: bool = False
    # Config file that contains this table.
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class WorkstationSettings:
    """One `[[workstation]]` table: an allowed caller and Move Destination."""

    # The workstation's AE title, stored without leading and trailing spaces.
    ae_title: str
    # Host and port of the workstation's Storage SCP, where C-MOVE sends images.
    host: str
    port: int
    # Seconds, with the same meaning as in PeerSettings.
    connect_timeout: float = 5.0
    acse_timeout: float = 10.0
    dimse_timeout: float = 30.0
    # Config file that contains this table.
    source_file: Path = field(default=Path("<defaults>"), compare=False)


@dataclass(frozen=True)
class Config:
    router: RouterSettings
    peers: tuple[PeerSettings, ...] = ()
    workstations: tuple[WorkstationSettings, ...] = ()
    files: tuple[Path, ...] = ()
    queue: QueueSettings = field(default_factory=QueueSettings)

    def peer_by_name(self, name: str) -> PeerSettings | None:
        return next((p for p in self.peers if p.name == name), None)

    def peer_by_ae_title(self, ae_title: str) -> PeerSettings | None:
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)

    def workstation_by_ae_title(self, ae_title: str) -> WorkstationSettings | None:
        wanted = ae_title.strip()
        return next((w for w in self.workstations if w.ae_title == wanted), None)

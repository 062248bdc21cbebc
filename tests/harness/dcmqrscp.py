"""DCMTK dcmqrscp archives that play a partner trust's PACS in the tests.

Each archive gets its own configuration file, storage area and log in a work
folder. Files are seeded over DICOM with storescu, because dcmqrscp keeps its
own index (index.dat) of what it has received.

NOTE: dcmqrscp 3.6.7 cannot hold compressed instances usefully. By default it
accepts and proposes only uncompressed transfer syntaxes. With -xy it proposes
JPEG Baseline first in the same presentation context as the uncompressed
syntaxes, so a C-MOVE destination that picks JPEG Baseline for CT Image Storage
makes every uncompressed CT sub-operation fail ("unable to convert dataset").
With separate contexts per transfer syntax (-xf profiles), dcmqrscp still sends
each instance on the first accepted context of its SOP class. seed() therefore
rejects compressed files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pydicom import dcmread
from pydicom.uid import UID

from harness import LoggedProcess
from harness.dcmtk import ToolResult, dcmtk_tool, echo_succeeds, run_storescu
from harness.ports import DicomNode, free_port

# dcmqrscp's configuration syntax has no quoting, so the harness accepts only
# names and AE titles that need none.
_SYMBOLIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_AE_TITLE = re.compile(r"[A-Za-z0-9_.\-]{1,16}")

# dcmqrscp 3.6.7 caps the number of studies per storage area at 500 and deletes
# the oldest study when a new one exceeds the quota.
_QUOTA = "(500, 1024mb)"


def _check_ae_title(ae_title: str) -> str:
    if not _AE_TITLE.fullmatch(ae_title):
        raise ValueError(
            f"AE title {ae_title!r} cannot be written to a dcmqrscp configuration: "
            "use 1 to 16 letters, digits, '_', '.' or '-'"
        )
    return ae_title


class DcmqrscpServer:
    """One dcmqrscp process with its configuration, storage area and log in `work_dir`."""

    def __init__(
        self,
        name: str,
        ae_title: str,
        work_dir: Path,
        *,
        port: int | None = None,
        move_destinations: Mapping[str, DicomNode] | None = None,
        seeding_ae: str = "SEEDSCU",
        allow_unknown_callers: bool = False,
        max_pdu: int = 65536,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Prepare an archive. Nothing runs until start().

        `move_destinations` are the AEs, keyed by a symbolic name, that may call
        the archive and receive its C-MOVE sub-operations. `seeding_ae` is the
        calling AE title that seed() uses. Unless `allow_unknown_callers` is set,
        dcmqrscp rejects associations from any other calling AE title.
        """
        self.name = name
        self.ae_title = _check_ae_title(ae_title)
        self.work_dir = work_dir.resolve()
        self.port = port if port is not None else free_port()
        self.move_destinations = dict(move_destinations or {})
        for symbolic_name, node in self.move_destinations.items():
            if not _SYMBOLIC_NAME.fullmatch(symbolic_name) or symbolic_name in ("seed", "known"):
                raise ValueError(
                    f"invalid dcmqrscp host table name {symbolic_name!r}: use a letter "
                    "followed by letters, digits or '_', other than 'seed' and 'known'"
                )
            _check_ae_title(node.ae_title)
        self.seeding_ae = _check_ae_title(seeding_ae)
        self.allow_unknown_callers = allow_unknown_callers
        self.max_pdu = max_pdu
        self.extra_args = list(extra_args)
        self.process: LoggedProcess | None = None

    @property
    def node(self) -> DicomNode:
        return DicomNode(self.ae_title, self.port)

    @property
    def storage_dir(self) -> Path:
        return self.work_dir / "storage"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "dcmqrscp.cfg"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "dcmqrscp.log"

    def config_text(self) -> str:
        """Return the dcmqrscp.cfg that start() writes."""
        host_lines = [
            f"{name} = ({node.ae_title}, {node.host}, {node.port})"
            for name, node in self.move_destinations.items()
        ]
        # The seeding AE only calls the archive and never receives, so its port
        # is a placeholder that nothing listens on.
        host_lines.append(f"seed = ({self.seeding_ae}, 127.0.0.1, 1)")
        host_lines.append("known = " + ", ".join([*self.move_destinations, "seed"]))
        peers = "ANY" if self.allow_unknown_callers else "known"
        lines = [
            f"NetworkTCPPort  = {self.port}",
            f"MaxPDUSize      = {self.max_pdu}",
            "MaxAssociations = 16",
            "",
            "HostTable BEGIN",
            *host_lines,
            "HostTable END",
            "",
            "VendorTable BEGIN",
            "VendorTable END",
            "",
            "AETable BEGIN",
            f"{self.ae_title} {self.storage_dir} RW {_QUOTA} {peers}",
            "AETable END",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> "DcmqrscpServer":
        """Write the configuration, start dcmqrscp and wait until it responds to a C-ECHO."""
        self.start_process()
        self.wait_until_ready(timeout)
        return self

    def start_process(self) -> None:
        """Write the configuration and start dcmqrscp without waiting for it."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="ascii")
        args = [
            dcmtk_tool("dcmqrscp"),
            "-v",
            # Compare the calling host with the host table as an IP address,
            # without a reverse lookup that would turn 127.0.0.1 into a name.
            "--disable-host-lookup",
            "-c", str(self.config_path),
            *self.extra_args,
            str(self.port),
        ]  # fmt: skip
        self.process = LoggedProcess(f"dcmqrscp {self.name}", args, self.log_path, cwd=self.work_dir)
        self.process.start()

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait until the process from start_process() responds to a C-ECHO."""
        if self.process is None:
            raise RuntimeError(f"dcmqrscp {self.name}: start_process() was not called")
        self.process.wait_until_ready(
            lambda: echo_succeeds(self.node, calling_ae=self.seeding_ae),
            timeout,
            f"dcmqrscp responds to C-ECHO on port {self.port}",
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    def seed(self, files: Iterable[Path], timeout: float = 60.0) -> list[ToolResult]:
        """Store files in the archive with storescu, calling as the seeding AE.

        Raises ValueError for a compressed file (see the module notes) and
        DcmtkError when a store fails.
        """
        paths = list(files)
        for path in paths:
            syntax = UID(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            if syntax.is_compressed:
                raise ValueError(
                    f"dcmqrscp cannot move compressed instances reliably; {path} uses "
                    f"{syntax.name}. Seed it into an Orthanc peer instead."
                )
        return run_storescu(self.node, paths, calling_ae=self.seeding_ae, timeout=timeout)

    def __enter__(self) -> "DcmqrscpServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

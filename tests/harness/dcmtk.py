"""Run DCMTK's command-line SCUs and a storescp destination.

The tools run with `-d` (debug) because only the debug log prints each DIMSE
message with its numeric status and sub-operation counts. The verbose log (`-v`)
prints status names such as "Success" but not the code. The exit status is no
substitute: DCMTK 3.6.7 findscu and getscu exit with 0 after a failed C-FIND
or C-GET, and movescu exits with 68 or 69 only for Warning or Failure.

The tools are taken from /usr/bin, or from the folder that the environment
variable YICROUTER_DCMTK_BIN names. On machines where pynetdicom's apps shadow
DCMTK's on PATH, the absolute path matters.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset

from harness import LoggedProcess
from harness.ports import DicomNode, free_port
from harness.waiting import wait_for

DCMTK_BIN = Path(os.environ.get("YICROUTER_DCMTK_BIN", "/usr/bin"))

QueryModel = Literal["study", "patient"]
_MODEL_FLAGS = {"study": "-S", "patient": "-P"}

# storescu proposes only uncompressed transfer syntaxes by default, and it
# cannot compress or decompress pixel data. Each compressed transfer syntax
# therefore needs its own proposal option (storescu 3.6.7 --help).
_STORESCU_PROPOSE_OPTIONS = {
    "1.2.840.10008.1.2": (),  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": (),  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": (),  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99": ("-xd",),  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50": ("-xy",),  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": ("-xx",),  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.70": ("-xs",),  # JPEG Lossless, first-order prediction
    "1.2.840.10008.1.2.4.80": ("-xt",),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": ("-xu",),  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": ("-xv",),  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91": ("-xw",),  # JPEG 2000
    "1.2.840.10008.1.2.5": ("-xr",),  # RLE Lossless
}


class DcmtkError(RuntimeError):
    """Raised when a DCMTK tool fails in a way that the caller asked to check."""


def dcmtk_tool(name: str) -> str:
    """Return the absolute path of a DCMTK program, or raise FileNotFoundError."""
    path = DCMTK_BIN / name
    if not path.is_file():
        raise FileNotFoundError(
            f"DCMTK program not found: {path}. Install DCMTK (Debian package "
            f"'dcmtk') or set YICROUTER_DCMTK_BIN to the folder that contains {name}."
        )
    return str(path)


# --- DIMSE messages in the debug log ------------------------------------------

_BLOCK_START = re.compile(r"^D: =+ (INCOMING|OUTGOING) DIMSE MESSAGE =+\s*$")
_BLOCK_END = re.compile(r"^D: =+ END DIMSE MESSAGE =+\s*$")
_FIELD = re.compile(r"^D: ([A-Za-z][A-Za-z ]*?)\s+: (.*)$")
_STATUS = re.compile(r"^0x([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class DimseMessage:
    """One DIMSE message as DCMTK's debug log prints it."""

    direction: Literal["INCOMING", "OUTGOING"]
    fields: Mapping[str, str]

    @property
    def message_type(self) -> str:
        """For example "C-FIND RSP" or "C-STORE RQ"."""
        return self.fields.get("Message Type", "")

    @property
    def status(self) -> int | None:
        """The DIMSE status, or None for a request."""
        match = _STATUS.match(self.fields.get("DIMSE Status", ""))
        return int(match.group(1), 16) if match else None

    def suboperations(self, kind: str) -> int | None:
        """Return the Number of `kind` Sub-operations, where kind is Remaining,
        Completed, Failed or Warning. DCMTK prints "none" when the element is absent."""
        value = self.fields.get(f"{kind} Suboperations", "none").strip()
        return int(value) if value.isdigit() else None


def parse_dimse_messages(output: str) -> list[DimseMessage]:
    """Extract the DIMSE messages from the output of a DCMTK tool run with -d.

    Only the command fields are kept. An identifier that DCMTK prints inside an
    outgoing message block (after a dashed line) is skipped.
    """
    messages: list[DimseMessage] = []
    direction: Literal["INCOMING", "OUTGOING"] | None = None
    fields: dict[str, str] = {}
    in_identifier = False
    for line in output.splitlines():
        start = _BLOCK_START.match(line)
        if start:
            direction = "INCOMING" if start.group(1) == "INCOMING" else "OUTGOING"
            fields = {}
            in_identifier = False
            continue
        if direction is None:
            continue
        if _BLOCK_END.match(line):
            messages.append(DimseMessage(direction, fields))
            direction = None
            continue
        if line.startswith("D: ----"):
            in_identifier = True
            continue
        if in_identifier:
            continue
        field_match = _FIELD.match(line)
        if field_match:
            fields[field_match.group(1).strip()] = field_match.group(2).strip()
    return messages


# --- results ------------------------------------------------------------------


@dataclass
class ToolResult:
    """Exit status and combined stdout and stderr of one DCMTK tool run."""

    args: list[str]
    returncode: int
    output: str
    messages: list[DimseMessage] = field(default_factory=list)

    def responses(self, message_type: str) -> list[DimseMessage]:
        """Return the incoming messages of one type, for example "C-MOVE RSP"."""
        return [
            message
            for message in self.messages
            if message.direction == "INCOMING" and message.message_type == message_type
        ]

    def describe(self) -> str:
        """Return the command line and output, for assertion messages."""
        return f"$ {shlex.join(self.args)}\n(exit status {self.returncode})\n{self.output}"


@dataclass
class FindResult(ToolResult):
    """Result of findscu: the identifiers of the Pending responses, in order."""

    datasets: list[Dataset] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [s for m in self.responses("C-FIND RSP") if (s := m.status) is not None]

    @property
    def final_status(self) -> int | None:
        """Status of the last C-FIND-RSP, or None when no response arrived."""
        statuses = self.statuses
        return statuses[-1] if statuses else None


@dataclass
class RetrieveResult(ToolResult):
    """Result of movescu or getscu: the final status and sub-operation counts."""

    response_type: str = "C-MOVE RSP"
    # Files that getscu wrote. Always empty for movescu.
    received_files: list[Path] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [s for m in self.responses(self.response_type) if (s := m.status) is not None]

    @property
    def final_status(self) -> int | None:
        """Status of the last response, or None when no response arrived."""
        statuses = self.statuses
        return statuses[-1] if statuses else None

    def _final_count(self, kind: str) -> int | None:
        responses = self.responses(self.response_type)
        return responses[-1].suboperations(kind) if responses else None

    @property
    def remaining(self) -> int | None:
        return self._final_count("Remaining")

    @property
    def completed(self) -> int | None:
        return self._final_count("Completed")

    @property
    def failed(self) -> int | None:
        return self._final_count("Failed")

    @property
    def warning(self) -> int | None:
        return self._final_count("Warning")


# --- running the SCUs ---------------------------------------------------------


def _seconds(value: float) -> str:
    """DCMTK timeouts are whole seconds."""
    return str(max(1, math.ceil(value)))


def _key_args(keys: Mapping[str, str | None]) -> list[str]:
    """Turn {"PatientID": "P1", "StudyInstanceUID": None} into -k options.

    None or "" requests the attribute as a return key with no matching value.
    """
    args: list[str] = []
    for key, value in keys.items():
        args += ["-k", key if value is None or value == "" else f"{key}={value}"]
    return args


def _network_args(node: DicomNode, calling_ae: str, timeout: float) -> list[str]:
    return [
        "-aet", calling_ae,
        "-aec", node.ae_title,
        "-to", _seconds(min(timeout, 10.0)),
        "-ta", _seconds(min(timeout, 10.0)),
        "-td", _seconds(timeout),
    ]  # fmt: skip


def _run_tool(args: list[str], timeout: float) -> tuple[int, str]:
    """Run a tool to completion and return its exit status and output.

    The subprocess limit is a few seconds longer than the DIMSE timeout given to
    the tool, so that the tool normally times out first and logs the reason.
    """
    try:
        completed = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout + 5.0,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        partial = (error.output or b"").decode("utf-8", errors="replace")
        raise DcmtkError(
            f"{Path(args[0]).name} did not finish within {timeout + 5.0:.0f} s and was "
            f"killed.\n$ {shlex.join(args)}\n{partial}"
        ) from error
    return completed.returncode, completed.stdout.decode("utf-8", errors="replace")


def run_findscu(
    node: DicomNode,
    keys: Mapping[str, str | None] | None = None,
    *,
    model: QueryModel = "study",
    calling_ae: str = "FINDSCU",
    query_file: Path | None = None,
    output_dir: Path | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> FindResult:
    """Send one C-FIND with findscu and return every response.

    `keys` become -k options and are applied on top of `query_file`, if given.
    Each Pending response's identifier is written with -X to `output_dir` (a
    temporary folder that is deleted afterwards when None) and read back.
    """
    keep_output = output_dir is not None
    folder = output_dir if output_dir is not None else Path(tempfile.mkdtemp(prefix="findscu-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        args = [dcmtk_tool("findscu"), "-d", _MODEL_FLAGS[model]]
        args += _network_args(node, calling_ae, timeout)
        args += ["-X", "-od", str(folder), *extra_args, *_key_args(keys or {})]
        args += [node.host, str(node.port)]
        if query_file is not None:
            args.append(str(query_file))
        returncode, output = _run_tool(args, timeout)
        datasets: list[Dataset] = [
            dcmread(path, force=True) for path in sorted(folder.glob("rsp*.dcm"))
        ]
    finally:
        if not keep_output:
            shutil.rmtree(folder, ignore_errors=True)
    return FindResult(
        args=args,
        returncode=returncode,
        output=output,
        messages=parse_dimse_messages(output),
        datasets=datasets,
    )


def run_movescu(
    node: DicomNode,
    move_destination: str,
    keys: Mapping[str, str | None] | None = None,
    *,
    model: QueryModel = "study",
    calling_ae: str = "MOVESCU",
    query_file: Path | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> RetrieveResult:
    """Send one C-MOVE with movescu to `move_destination` and return its responses.

    movescu only sends the request here. The instances go to the AE that the
    peer has configured as `move_destination`, for example a StoreSCP.
    """
    args = [dcmtk_tool("movescu"), "-d", _MODEL_FLAGS[model]]
    args += _network_args(node, calling_ae, timeout)
    args += ["-aem", move_destination, *extra_args, *_key_args(keys or {})]
    args += [node.host, str(node.port)]
    if query_file is not None:
        args.append(str(query_file))
    returncode, output = _run_tool(args, timeout)
    return RetrieveResult(
        args=args,
        returncode=returncode,
        output=output,
        messages=parse_dimse_messages(output),
        response_type="C-MOVE RSP",
    )


def run_getscu(
    node: DicomNode,
    output_dir: Path,
    keys: Mapping[str, str | None] | None = None,
    *,
    model: QueryModel = "study",
    calling_ae: str = "GETSCU",
    query_file: Path | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> RetrieveResult:
    """Send one C-GET with getscu and store the instances in `output_dir`.

    getscu accepts only uncompressed transfer syntaxes unless `extra_args`
    contains a preference such as "+xy" (JPEG Baseline).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    before = set(output_dir.iterdir())
    args = [dcmtk_tool("getscu"), "-d", _MODEL_FLAGS[model]]
    args += _network_args(node, calling_ae, timeout)
    args += ["-od", str(output_dir), *extra_args, *_key_args(keys or {})]
    args += [node.host, str(node.port)]
    if query_file is not None:
        args.append(str(query_file))
    returncode, output = _run_tool(args, timeout)
    return RetrieveResult(
        args=args,
        returncode=returncode,
        output=output,
        messages=parse_dimse_messages(output),
        response_type="C-GET RSP",
        received_files=sorted(set(output_dir.iterdir()) - before),
    )


def run_echoscu(
    node: DicomNode, *, calling_ae: str = "ECHOSCU", timeout: float = 5.0
) -> ToolResult:
    """Send one C-ECHO with echoscu.

    echoscu 3.6.7 prints no DIMSE message blocks even with -d, so `messages`
    stays empty. Its verbose log names the status instead.
    """
    args = [dcmtk_tool("echoscu"), "-v", *_network_args(node, calling_ae, timeout)]
    args += [node.host, str(node.port)]
    returncode, output = _run_tool(args, timeout)
    return ToolResult(args, returncode, output)


def echo_succeeds(node: DicomNode, *, calling_ae: str = "ECHOSCU", timeout: float = 2.0) -> bool:
    """Return True when `node` responds to a C-ECHO with Success."""
    try:
        result = run_echoscu(node, calling_ae=calling_ae, timeout=timeout)
    except DcmtkError:
        return False
    return result.returncode == 0 and "Received Echo Response (Success)" in result.output


def run_storescu(
    node: DicomNode,
    files: Iterable[Path],
    *,
    calling_ae: str = "STORESCU",
    timeout: float = 60.0,
    check: bool = True,
) -> list[ToolResult]:
    """Send files with storescu, one association per transfer syntax.

    Each file keeps its transfer syntax because storescu proposes it explicitly.
    With `check`, raises DcmtkError unless every file got a Success C-STORE-RSP.
    Raises ValueError for a transfer syntax that storescu cannot propose.
    """
    groups: dict[str, list[Path]] = {}
    for path in files:
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if syntax not in _STORESCU_PROPOSE_OPTIONS:
            raise ValueError(f"storescu cannot propose transfer syntax {syntax} of {path}")
        groups.setdefault(syntax, []).append(path)

    results: list[ToolResult] = []
    for syntax, paths in groups.items():
        args = [dcmtk_tool("storescu"), "-d", "-R", *_STORESCU_PROPOSE_OPTIONS[syntax]]
        args += _network_args(node, calling_ae, timeout)
        args += [node.host, str(node.port), *map(str, paths)]
        returncode, output = _run_tool(args, timeout)
        result = ToolResult(args, returncode, output, parse_dimse_messages(output))
        results.append(result)
        if check:
            statuses = [m.status for m in result.responses("C-STORE RSP")]
            if returncode != 0 or statuses != [0x0000] * len(paths):
                raise DcmtkError(
                    f"storescu stored {statuses.count(0x0000)} of {len(paths)} files "
                    f"at {node}:\n{result.describe()}"
                )
    return results


# --- storescp destination -----------------------------------------------------


@dataclass(frozen=True)
class ReceivedFile:
    """One file that storescp has written, with the AE titles of its association."""

    path: Path
    calling_ae: str
    called_ae: str


class StoreSCP:
    """A DCMTK storescp that writes each received instance to `output_dir`.

    storescp runs a shell command after each file it has written (-xcr), which
    appends a line to `received_list` (`<output_dir>.received.tsv`). A line in
    that list means the file is complete, but a file that is merely present in
    the folder may still be partial.
    """

    def __init__(
        self,
        ae_title: str,
        output_dir: Path,
        *,
        port: int | None = None,
        accept_all_transfer_syntaxes: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.ae_title = ae_title
        self.port = port if port is not None else free_port()
        self.output_dir = output_dir.resolve()
        self.received_list = self.output_dir.parent / f"{self.output_dir.name}.received.tsv"
        self.accept_all_transfer_syntaxes = accept_all_transfer_syntaxes
        self.extra_args = list(extra_args)
        self.process: LoggedProcess | None = None

    @property
    def node(self) -> DicomNode:
        return DicomNode(self.ae_title, self.port)

    @property
    def log_path(self) -> Path:
        return self.output_dir.parent / f"{self.output_dir.name}.storescp.log"

    def start(self, timeout: float = 10.0) -> "StoreSCP":
        """Start storescp and wait until it responds to a C-ECHO."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # DCMTK replaces #a, #c, #p and #f with the calling AE title, the called
        # AE title, the output folder and the file name, then runs the command
        # with /bin/sh.
        on_reception = (
            'printf "%s\\t%s\\t%s\\n" "#a" "#c" "#p/#f" >> ' + shlex.quote(str(self.received_list))
        )
        args = [dcmtk_tool("storescp"), "-v", "-aet", self.ae_title, "-od", str(self.output_dir)]
        if self.accept_all_transfer_syntaxes:
            args.append("+xa")
        args += ["-xcr", on_reception, *self.extra_args, str(self.port)]
        self.process = LoggedProcess(f"storescp {self.ae_title}", args, self.log_path)
        self.process.start()
        self.process.wait_until_ready(
            lambda: echo_succeeds(self.node), timeout, f"storescp responds to C-ECHO on port {self.port}"
        )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def received(self) -> list[ReceivedFile]:
        """Return the files written so far, in arrival order, duplicates included."""
        try:
            lines = self.received_list.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        files = []
        for line in lines:
            parts = line.split("\t")
            if len(parts) == 3:
                calling_ae, called_ae, path = parts
                files.append(ReceivedFile(Path(path), calling_ae.strip(), called_ae.strip()))
        return files

    def received_files(self) -> list[Path]:
        return [item.path for item in self.received()]

    def received_datasets(self) -> dict[str, Dataset]:
        """Read every received file and return it keyed by SOP Instance UID."""
        datasets: dict[str, Dataset] = {}
        for path in self.received_files():
            dataset = dcmread(path)
            datasets[str(dataset.SOPInstanceUID)] = dataset
        return datasets

    def wait_for_files(self, count: int, timeout: float = 30.0) -> list[Path]:
        """Wait until at least `count` files have been received, and return them all."""
        wait_for(
            lambda: len(self.received()) >= count,
            timeout=timeout,
            message=lambda: (
                f"storescp {self.ae_title} received {len(self.received())} of {count} "
                f"files; log {self.log_path}:\n"
                + (self.process.log_tail() if self.process else "")
            ),
        )
        return self.received_files()

    def __enter__(self) -> "StoreSCP":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

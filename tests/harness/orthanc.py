"""Orthanc instances that play a partner trust's PACS in the tests.

Each instance gets its own JSON configuration, database and log in a work folder,
and never reads the system configuration in /etc/orthanc.

NOTE: Orthanc 1.10.1 has no option to choose the listening address, so its DICOM
and HTTP ports listen on all interfaces. The configuration limits the exposure:
the REST API rejects remote clients (RemoteAccessAllowed false), and C-FIND,
C-MOVE and C-GET are accepted only from the AE titles listed as modalities,
connecting from 127.0.0.1 (DicomCheckModalityHost true).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness import LoggedProcess
from harness.ports import LOOPBACK, DicomNode, free_port

ORTHANC_EXECUTABLE = os.environ.get("YICROUTER_ORTHANC", "/usr/sbin/Orthanc")

# urllib would send even loopback requests through an HTTP proxy named in the
# environment, so the REST client bypasses every proxy.
_REST_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OrthancError(RuntimeError):
    """Raised when the Orthanc REST API returns an error or an unexpected response."""


class OrthancServer:
    """One Orthanc process with its configuration, database and log in `work_dir`."""

    def __init__(
        self,
        name: str,
        ae_title: str,
        work_dir: Path,
        *,
        dicom_port: int | None = None,
        http_port: int | None = None,
        modalities: Mapping[str, DicomNode] | None = None,
        allow_unknown_callers: bool = False,
        verbose: bool = True,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        """Prepare an instance. Nothing runs until start().

        `modalities` are the AEs that Orthanc accepts queries and retrieves from
        and may send C-MOVE sub-operations to, keyed by a symbolic name.
        `allow_unknown_callers` also accepts C-FIND, C-MOVE and C-GET from AE
        titles that are not listed. `extra_config` entries override the
        generated configuration.
        """
        self.name = name
        self.ae_title = ae_title
        self.work_dir = work_dir.resolve()
        self.dicom_port = dicom_port if dicom_port is not None else free_port()
        self.http_port = http_port if http_port is not None else free_port()
        self.modalities = dict(modalities or {})
        self.allow_unknown_callers = allow_unknown_callers
        self.verbose = verbose
        self.extra_config = dict(extra_config or {})
        self.process: LoggedProcess | None = None

    @property
    def node(self) -> DicomNode:
        return DicomNode(self.ae_title, self.dicom_port)

    @property
    def config_path(self) -> Path:
        return self.work_dir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        """Return the configuration that start() writes, as a JSON-ready dict."""
        storage = str(self.work_dir / "storage")
        config: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            # Test data may be lost in a crash, so skip the fsync after each write.
            "SyncStorageArea": False,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "OrthancExplorerEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": self.allow_unknown_callers,
            "DicomAlwaysAllowFindWorklist": False,
            "DicomAlwaysAllowGet": self.allow_unknown_callers,
            "DicomAlwaysAllowMove": self.allow_unknown_callers,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {
                name: {"AET": node.ae_title, "Host": node.host, "Port": node.port}
                for name, node in self.modalities.items()
            },
            # Orthanc keeps its outgoing C-STORE association open for 5 s by
            # default. Closing it at once lets a destination see the release
            # as soon as a C-MOVE has finished.
            "DicomAssociationCloseDelay": 0,
            "SaveJobs": False,
        }
        config.update(self.extra_config)
        return config

    def start(self, timeout: float = 20.0) -> "OrthancServer":
        """Write the configuration, start Orthanc and wait until GET /system responds."""
        self.start_process()
        self.wait_until_ready(timeout)
        return self

    def start_process(self) -> None:
        """Write the configuration and start Orthanc without waiting for it.

        Starting several servers first and waiting afterwards overlaps their
        start-up times.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        args = [ORTHANC_EXECUTABLE, str(self.config_path)]
        if self.verbose:
            args.append("--verbose")
        self.process = LoggedProcess(f"Orthanc {self.name}", args, self.log_path, cwd=self.work_dir)
        self.process.start()

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        """Wait until the process from start_process() responds to GET /system."""
        if self.process is None:
            raise RuntimeError(f"Orthanc {self.name}: start_process() was not called")
        self.process.wait_until_ready(
            self._system_matches, timeout, f"REST API responds on {self.base_url}/system"
        )

    def _system_matches(self) -> bool:
        """Return True when GET /system returns this instance's AE title.

        Checking the AE title guards against another Orthanc that took the port.
        """
        try:
            system = self.rest_get("/system", timeout=1.0)
        except (OrthancError, OSError):
            return False
        return bool(system.get("DicomAet") == self.ae_title)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    # --- REST API -----------------------------------------------------------

    def _request(
        self, method: str, path: str, body: bytes | None, content_type: str, timeout: float
    ) -> Any:
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method=method,
            headers={"Content-Type": content_type} if body is not None else {},
        )
        try:
            with _REST_OPENER.open(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")
            raise OrthancError(
                f"{method} {path} on Orthanc {self.name} failed with HTTP {error.code}: {detail}"
            ) from error
        return json.loads(payload) if payload else None

    def rest_get(self, path: str, timeout: float = 10.0) -> Any:
        return self._request("GET", path, None, "", timeout)

    def rest_post(
        self, path: str, body: bytes, content_type: str = "application/json", timeout: float = 30.0
    ) -> Any:
        return self._request("POST", path, body, content_type, timeout)

    def rest_put(self, path: str, document: Any, timeout: float = 10.0) -> Any:
        body = json.dumps(document).encode("utf-8")
        return self._request("PUT", path, body, "application/json", timeout)

    def seed(self, files: Iterable[Path]) -> list[str]:
        """Upload DICOM files with POST /instances and return their Orthanc ids.

        Raises OrthancError when Orthanc neither stores a file nor reports it as
        already stored.
        """
        ids = []
        for path in files:
            answer = self.rest_post("/instances", path.read_bytes(), "application/dicom")
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise OrthancError(f"Orthanc {self.name} did not store {path}: {answer}")
            ids.append(str(answer["ID"]))
        return ids

    def add_modality(self, name: str, node: DicomNode) -> None:
        """Register another AE at run time, for example a new Move Destination."""
        self.rest_put(f"/modalities/{name}", {"AET": node.ae_title, "Host": node.host, "Port": node.port})
        self.modalities[name] = node

    def study_instance_uids(self) -> set[str]:
        """Return the Study Instance UIDs that this instance stores."""
        studies = self.rest_get("/studies?expand")
        return {study["MainDicomTags"]["StudyInstanceUID"] for study in studies}

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

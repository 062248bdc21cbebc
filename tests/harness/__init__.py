"""Test harness that runs real DICOM peers on loopback ports.

The modules start and stop the programs that the end-to-end tests talk to:
`orthanc` (Orthanc PACS), `dcmqrscp` (DCMTK's Q/R archive), `dcmtk` (the DCMTK
command-line SCUs and a storescp destination) and `router` (yicrouter itself).
`ports` reserves free loopback ports and `waiting` polls for readiness.

This module contains LoggedProcess, the subprocess wrapper they all share. Its
stop() signals the whole process group, because dcmqrscp forks one child per
association and those children must not outlive the test session.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import weakref
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from harness.waiting import WaitTimeout, wait_for


class ProcessExitedError(RuntimeError):
    """Raised when a server process exits while the harness waits for it to be ready."""


class LoggedProcess:
    """A server subprocess in its own process group, with stdout and stderr in one log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = [str(arg) for arg in args]
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Start the process. The log file is appended to, so restarts keep old output."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running as pid {self.pid}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )
        _running_processes.add(self)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while the process runs or before it was started."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_text(self) -> str:
        """Return the whole log. Bytes that are not UTF-8 are replaced."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_until_ready(
        self, predicate: Callable[[], bool], timeout: float, description: str
    ) -> None:
        """Poll `predicate` until it is true, and fail early if the process exits.

        Raises ProcessExitedError with the log tail when the process exits first,
        and WaitTimeout with the log tail when `timeout` seconds pass first.
        """

        def ready() -> bool:
            if not self.is_running():
                raise ProcessExitedError(
                    f"{self.name} exited with status {self.returncode} before "
                    f"{description}; log {self.log_path}:\n{self.log_tail()}"
                )
            return predicate()

        wait_for(
            ready,
            timeout=timeout,
            interval=0.05,
            message=lambda: f"{self.name}: {description}; log {self.log_path}:\n{self.log_tail()}",
        )

    def send_signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the main process only, for tests of its signal handling.

        Call stop() afterwards as well, because it reaps the process, closes
        the log file and kills any children that are left.
        """
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        self._popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait until the main process exits and return its exit status.

        Raises subprocess.TimeoutExpired when it still runs after `timeout` seconds.
        """
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM to the process group, then SIGKILL after `timeout` seconds.

        Returns the exit status of the main process, or None if it was never started.
        """
        if self._popen is None:
            return None
        try:
            # returncode is set once the main process has been reaped. After
            # that its pid, which is also the group id, may belong to another
            # program, so the group is signalled only before reaping.
            if self._popen.returncode is None:
                self._signal_group(signal.SIGTERM)
                if not self._wait_for_exit(timeout):
                    self._signal_group(signal.SIGKILL)
                    self._wait_for_exit(timeout)
                # Children forked by the main process (dcmqrscp's association
                # handlers) may outlive it.
                self._signal_group(signal.SIGKILL)
            self._popen.wait(timeout=timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            _running_processes.discard(self)
        return self._popen.returncode

    def _wait_for_exit(self, timeout: float) -> bool:
        """Wait until the main process exits, without reaping it."""
        assert self._popen is not None
        pid = self._popen.pid

        def exited() -> bool:
            if self._popen is None or self._popen.returncode is not None:
                return True
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, pid, flags) is not None

        try:
            wait_for(exited, timeout=timeout, interval=0.02)
        except WaitTimeout:
            return False
        return True

    def _signal_group(self, signum: signal.Signals) -> None:
        assert self._popen is not None
        try:
            # start_new_session=True made the child the leader of a new process
            # group whose id is its pid, so this reaches only processes it started.
            os.killpg(self._popen.pid, signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "LoggedProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Safety net for a session that ends without running its fixture finalizers.
_running_processes: "weakref.WeakSet[LoggedProcess]" = weakref.WeakSet()


@atexit.register
def _stop_leftover_processes() -> None:
    for process in list(_running_processes):
        process.stop(timeout=5.0)

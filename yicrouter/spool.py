"""The spool: received instances on disk under `state_dir/spool`.

pynetdicom writes each incoming C-STORE data set to a temporary file in
`spool/incoming` (the router points `tempfile.tempdir` there, so the file is on
the same filesystem). The C-STORE handler then renames it into the folder of
its move, so an instance is never held whole in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


# Tries to create a move's folder and rename a file into it.
_ACCEPT_ATTEMPTS = 3


class Spool:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "spool"
        self.incoming = self.root / "incoming"
        self.jobs = self.root / "jobs"
        self._previous_tempdir: str | None = None

    def prepare(self) -> None:
        """Create the spool folders and send pynetdicom's temporary files there."""
        for folder in (self.incoming, self.jobs):
            folder.mkdir(parents=True, exist_ok=True)
        self._previous_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.incoming)

    def release(self) -> None:
        """Send temporary files back where they went before prepare()."""
        tempfile.tempdir = self._previous_tempdir

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def accept(self, temporary: Path, job_id: str, sop_instance_uid: str) -> Path:
        """Move a received file into its move's folder, on disk, and return the new path.

        The file and its folder are flushed with fsync before this returns,
        so an instance acknowledged to the peer survives a crash.
        """
        folder = self.jobs / job_id
        target = folder / f"{_safe_name(sop_instance_uid)}.dcm"
        # discard() removes a move's folder once it is empty, possibly just
        # between the mkdir and the rename here, so a vanished folder is retried.
        for attempt in range(_ACCEPT_ATTEMPTS):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, target)
                break
            except (FileNotFoundError, FileExistsError):
                if attempt == _ACCEPT_ATTEMPTS - 1 or not temporary.exists():
                    raise
        _fsync(target, os.O_RDONLY)
        _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)
        return target

    def discard(self, path: Path) -> None:
        """Delete a spooled file, and its move's folder once that is empty."""
        path.unlink(missing_ok=True)
        if path.parent.parent == self.jobs:
            try:
                path.parent.rmdir()
            except OSError:
                pass  # other instances of the move are still queued


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_name(uid: str) -> str:
    """Return `uid` usable as a file name; a UID is digits and dots only."""
    cleaned = "".join(ch for ch in uid if ch.isdigit() or ch == ".")
    return cleaned or "unknown"

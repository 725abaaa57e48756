"""The model store in a folder: every version's artifact a file beside one index.json. A bot and its workers may
write one store at once (each bootstraps an empty one): the folder is locked while its index is read, changed and
written."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ml.store.base import FORMAT, SUFFIX, ModelStore, ModelVersion, StoreError


class FileStore(ModelStore):
    """Artifacts as <dir>/v0001.skops (v0001.pkl before skops) and one <dir>/index.json, written atomically."""

    def __init__(self, directory: str, signing_key: bytes | None = None) -> None:
        self.describe = f"file:{directory}"
        self.signing_key = signing_key
        self.root = Path(directory)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot create the folder ({err.strerror})") from err

    def _write_atomic(self, name: str, data: bytes) -> None:
        """Write a temp file in the same folder, then rename it over the target: no half-written file."""
        tmp = self.root / f".{name}.tmp"  # writers hold the folder's lock, so a fixed temp name cannot clash
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # the bytes must be on disk before the rename makes them visible
            os.replace(tmp, self.root / name)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.describe}: cannot write {name} ({err.strerror})") from err

    @contextlib.contextmanager
    def _updating(self) -> Iterator[None]:
        """An exclusive lock on the folder itself: a bot and its workers may bootstrap it at once."""
        try:
            folder = os.open(self.root, os.O_RDONLY)
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot open the folder ({err.strerror})") from err
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # and with it the lock

    def _read_index(self) -> bytes | None:
        try:
            return (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot read index.json ({err.strerror})") from err

    def _write_index(self, data: bytes) -> None:
        self._write_atomic("index.json", data)

    def _put_artifact(self, version: int, artifact: bytes) -> None:
        self._write_atomic(f"v{version:04d}.{SUFFIX[FORMAT]}", artifact)

    def _get_artifact(self, record: ModelVersion) -> bytes:
        name = f"v{record.version:04d}.{SUFFIX[record.format]}"
        try:
            return (self.root / name).read_bytes()
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot read {name} ({err.strerror})") from err

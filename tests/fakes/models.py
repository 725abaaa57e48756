"""Model stores as an attacker or an older release leaves them: pickles that run code, entries without a
format or a signature."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

from sklearn.pipeline import Pipeline


class WritesAMarker:
    """What an attacker pickles: unpickling it runs exec, which writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def evil_pickle(marker: Path) -> bytes:
    """A pickled Pipeline with the payload inside, proven live on a neighbour of the marker first."""
    payload = pickle.dumps(Pipeline([("step", WritesAMarker(marker))]))
    proof = marker.with_name(f"{marker.name}.proof")
    pickle.loads(pickle.dumps(WritesAMarker(proof)))
    assert proof.read_text() == "code ran"
    return payload


def legacy_entry(version: int, data: bytes, object_version: str | None = None) -> dict:
    """An index entry as the code before skops wrote it: no format, no signature."""
    return {"version": version, "created": "2025-01-01T00:00:00+00:00", "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "meta": {"rows": version}, "object_version": object_version}


def pickle_folder(folder: Path, blobs: list[bytes]) -> None:
    """A folder store of the code before skops, its last version active."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, blob in enumerate(blobs, 1):
        (folder / f"v{number:04d}.pkl").write_bytes(blob)
    entries = [legacy_entry(n, blob) for n, blob in enumerate(blobs, 1)]
    (folder / "index.json").write_text(json.dumps({"active": len(blobs), "versions": entries}))

"""A disk model as files: the pipeline in skops (ml/artifact.py: an allowlist of types, never a pickle) and, next
to it, a JSON record of its SHA-256, size and metadata (the alert threshold, the held-out figures, the library
versions). Loading checks the digest before skops reads a byte of the model.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from sklearn.pipeline import Pipeline

from ml import artifact
from ml.disks.risk import DiskModel
from ml.store import ChecksumMismatch, StoreError

SHIPPED = Path(__file__).with_name("shipped") / "disk-model.skops"  # trained on the Backblaze sample


def record_path(path: Path) -> Path:
    """Where the JSON record of the model at `path` lives: beside it, with the suffix .json."""
    return path.with_suffix(".json")


def save(pipeline: Pipeline, meta: dict, path: Path = SHIPPED) -> str:
    """Write the model and its record; returns the model's SHA-256. The skops file is deflated (its schema, a
    JSON description of 17 bases, is most of it), and read back as `load` will before anything is written."""
    import skops.io  # only when a disk model is trained: see ml/artifact.py `_skops`

    data = skops.io.dumps(pipeline, compression=zipfile.ZIP_DEFLATED)
    artifact.loads(data)  # refuses a type outside the allowlist, as artifact.dumps does
    digest = hashlib.sha256(data).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    record = {"format": "skops", "sha256": digest, "size": len(data), "meta": meta}
    record_path(path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return digest


def load(path: Path = SHIPPED) -> DiskModel:
    """The model at `path`, at the threshold its record names; refuses bytes whose SHA-256 is not the record's."""
    try:
        record = json.loads(record_path(path).read_text())
        data = path.read_bytes()
    except OSError as err:
        raise StoreError(f"cannot read the disk model {path.name} ({err.strerror})") from err
    except ValueError as err:
        raise StoreError(f"the record of the disk model {path.name} is not JSON") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("sha256"):
        raise ChecksumMismatch(f"the disk model {path.name} has SHA-256 {digest[:12]}..., its record says "
                               f"{str(record.get('sha256'))[:12]}...; refusing to use it")
    return DiskModel(artifact.loads(data), float(record["meta"]["threshold"]), record["meta"])

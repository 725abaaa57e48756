"""The model store: every trained model version as opaque bytes plus a signed index, in a folder (folder.py) or an
S3 bucket (s3.py); what every store guarantees is in base.py. `open_store` opens the one MODEL_STORE names."""

from ml.store.base import (
    BadIndex,
    ChecksumMismatch,
    IndexChanged,
    ModelStore,
    ModelVersion,
    Refused,
    StoreError,
    UnknownVersion,
)
from ml.store.folder import FileStore
from ml.store.s3 import S3Store

__all__ = ["BadIndex", "ChecksumMismatch", "FileStore", "IndexChanged", "ModelStore", "ModelVersion", "Refused",
           "S3Store", "StoreError", "UnknownVersion", "open_disk_store", "open_store"]


def open_store(url: str, signing_key: str | None = None) -> ModelStore:
    """The model store named by MODEL_STORE: "file:<dir>" or "s3://bucket/prefix"; an S3 store needs the
    MODEL_SIGNING_KEY, a folder (as trusted as the code next to it) signs only when given one."""
    key = signing_key.encode() if signing_key else None
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if bucket:
            if key is None:
                raise ValueError("MODEL_SIGNING_KEY is required for an s3:// MODEL_STORE")
            return S3Store(bucket, prefix, key)
    elif url.startswith("file:"):
        directory = url[len("file:"):]
        directory = directory.removeprefix("//")  # file:///abs and file://rel too
        if directory:
            return FileStore(directory, key)
    raise ValueError(f"MODEL_STORE must be file:<dir> or s3://bucket/prefix, got {url!r}")


DISKS = "disks"  # where the disk model's versions live in a store: beside the machine model's


def open_disk_store(url: str, signing_key: str | None = None) -> ModelStore:
    """The disk model's versions in the store MODEL_STORE names: its folder or prefix `disks/`, versioned and
    signed as the machine model's are."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        return open_store(f"s3://{bucket}/{prefix.rstrip('/') + '/' if prefix else ''}{DISKS}", signing_key)
    return open_store(f"{url.rstrip('/')}/{DISKS}", signing_key)

"""The model store: every trained model version as opaque bytes plus metadata, in a folder or an S3 bucket.

The registry never unpickles anything: it hands back bytes only after their SHA-256 matches the digest
recorded at save time. Both stores assume one writer process (the bot), so there is no locking; a second
writer could race on the version number or the index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

# Small timeouts and few retries: an unreachable S3 should fail in seconds, not minutes.
S3_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})


class StoreError(Exception):
    """The model store cannot be used (unreachable, misconfigured); message is for people."""


class ChecksumMismatch(StoreError):
    """An artifact's bytes do not match the SHA-256 recorded when it was saved."""


class UnknownVersion(StoreError):
    """The store has no model version with that number."""


@dataclass(frozen=True)
class ModelVersion:
    """One saved model version, as recorded in the store's index."""

    version: int
    created: str
    sha256: str
    size: int
    meta: dict
    object_version: str | None = None


class ModelStore(ABC):
    """Versions, the active pointer and artifacts; subclasses only move the index and artifact bytes."""

    describe: str

    @abstractmethod
    def _read_index(self) -> bytes | None:
        """The stored index.json, or None when nothing was saved yet."""

    @abstractmethod
    def _write_index(self, data: bytes) -> None:
        """Replace the stored index.json in one step."""

    @abstractmethod
    def _put_artifact(self, version: int, artifact: bytes) -> str | None:
        """Store the bytes of a new version; returns the S3 VersionId, if any."""

    @abstractmethod
    def _get_artifact(self, record: ModelVersion) -> bytes:
        """The stored bytes of a version, unchecked."""

    def _index(self) -> tuple[int | None, list[ModelVersion]]:
        """The active version and all versions, oldest first."""
        data = self._read_index()
        if data is None:
            return None, []
        try:
            index = json.loads(data)
            records = [ModelVersion(**entry) for entry in index["versions"]]
            return index["active"], sorted(records, key=lambda r: r.version)
        except (ValueError, TypeError, KeyError) as err:
            raise StoreError(f"{self.describe}: index.json is not a model index ({err})") from err

    def _store_index(self, active: int | None, records: list[ModelVersion]) -> None:
        """Write the index in the shared layout."""
        index = {"active": active, "versions": [dataclasses.asdict(r) for r in records]}
        self._write_index(json.dumps(index, indent=1).encode())

    def versions(self) -> list[ModelVersion]:
        """All versions, oldest first."""
        return self._index()[1]

    def get(self, version: int) -> ModelVersion:
        """The record of one version; UnknownVersion if absent."""
        for record in self.versions():
            if record.version == version:
                return record
        raise UnknownVersion(f"{self.describe} has no model version {version}")

    def save(self, artifact: bytes, meta: dict) -> ModelVersion:
        """Store a new version (max + 1) without activating it."""
        # A JSON round trip up front: unserialisable metadata fails before any upload, and the record
        # returned now equals the one read back later.
        meta = json.loads(json.dumps(meta))
        active, records = self._index()
        number = max((r.version for r in records), default=0) + 1
        # Artifact first, index second: until the index names it, the version does not exist.
        object_version = self._put_artifact(number, artifact)
        record = ModelVersion(
            version=number,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            sha256=hashlib.sha256(artifact).hexdigest(),
            size=len(artifact),
            meta=meta,
            object_version=object_version,
        )
        self._store_index(active, [*records, record])
        log.info("saved model version %d (%d bytes) to %s", number, len(artifact), self.describe)
        return record

    def load(self, version: int) -> bytes:
        """The artifact bytes of a version, only if their SHA-256 matches the record."""
        record = self.get(version)
        data = self._get_artifact(record)
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            raise ChecksumMismatch(
                f"{self.describe}: model version {version} has SHA-256 {digest[:12]}..., "
                f"recorded {record.sha256[:12]}...; refusing to use it"
            )
        return data

    def active(self) -> int | None:
        """The active version, or None when none is active."""
        return self._index()[0]

    def activate(self, version: int) -> None:
        """Make a saved version the active one; UnknownVersion if absent."""
        _, records = self._index()
        if version not in {r.version for r in records}:
            raise UnknownVersion(f"{self.describe} has no model version {version}")
        self._store_index(version, records)
        log.info("activated model version %d in %s", version, self.describe)


class FileStore(ModelStore):
    """Artifacts as <dir>/v0001.pkl and one <dir>/index.json, every file written atomically."""

    def __init__(self, directory: str) -> None:
        self.describe = f"file:{directory}"
        self.root = Path(directory)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot create the folder ({err.strerror})") from err

    def _write_atomic(self, name: str, data: bytes) -> None:
        """Write a temp file in the same folder, then rename it over the target: no half-written file."""
        tmp = self.root / f".{name}.tmp"  # one writer, so a fixed temp name cannot clash
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
        self._write_atomic(f"v{version:04d}.pkl", artifact)

    def _get_artifact(self, record: ModelVersion) -> bytes:
        name = f"v{record.version:04d}.pkl"
        try:
            return (self.root / name).read_bytes()
        except OSError as err:
            raise StoreError(f"{self.describe}: cannot read {name} ({err.strerror})") from err


class S3Store(ModelStore):
    """One key <prefix>/model.pkl whose S3 object versions are the model history, plus <prefix>/index.json."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.describe = f"s3://{bucket}/{self.prefix}"
        folder = f"{self.prefix}/" if self.prefix else ""
        self.artifact_key, self.index_key = f"{folder}model.pkl", f"{folder}index.json"
        with self._errors("opening the store"):
            # boto3 picks up AWS_ENDPOINT_URL and the credentials from the environment itself.
            self.client = boto3.client("s3", config=S3_CONFIG)
            status = self.client.get_bucket_versioning(Bucket=bucket).get("Status")
        if status != "Enabled":
            self._enable_versioning()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn botocore errors into a StoreError with a one-line message (no traceback, no secrets)."""
        try:
            yield
        except ClientError as err:
            error = err.response.get("Error", {})
            code = error.get("Code", "")
            if code == "NoSuchBucket":
                raise StoreError(f"{self.describe}: bucket {self.bucket} does not exist") from err
            message = f"{code} {error.get('Message', '')}".strip()
            raise StoreError(f"{self.describe}: {action} failed: {message}") from err
        except (BotoCoreError, ValueError) as err:  # ValueError: boto3 rejects a malformed endpoint URL
            raise StoreError(f"{self.describe}: {action} failed: {err}") from err

    def _enable_versioning(self) -> None:
        """The bucket's own versioning keeps the history, so a store without it cannot work."""
        try:
            self.client.put_bucket_versioning(
                Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(
                f"bucket {self.bucket} has no versioning and these credentials cannot enable it: {err}"
            ) from err
        log.warning("enabled versioning on bucket %s", self.bucket)

    def _read_index(self) -> bytes | None:
        with self._errors("reading index.json"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.index_key)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                return None

    def _write_index(self, data: bytes) -> None:
        # If this fails after an artifact upload, the index still lists only the old versions; the new
        # object version of model.pkl is an orphan nobody points to, which is harmless.
        with self._errors("writing index.json"):
            self.client.put_object(
                Bucket=self.bucket, Key=self.index_key, Body=data, ContentType="application/json"
            )

    def _put_artifact(self, version: int, artifact: bytes) -> str:
        with self._errors(f"uploading model version {version}"):
            response = self.client.put_object(Bucket=self.bucket, Key=self.artifact_key, Body=artifact)
        object_version = response.get("VersionId")
        if not object_version or object_version == "null":  # someone suspended versioning since we opened
            raise StoreError(f"{self.describe}: the upload got no object version; is versioning suspended?")
        return object_version

    def _get_artifact(self, record: ModelVersion) -> bytes:
        with self._errors(f"downloading model version {record.version}"):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.artifact_key, VersionId=record.object_version
            )
            return response["Body"].read()


def open_store(url: str) -> ModelStore:
    """The model store named by MODEL_STORE: "file:<dir>" or "s3://bucket/prefix"."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if bucket:
            return S3Store(bucket, prefix)
    elif url.startswith("file:"):
        directory = url[len("file:"):]
        directory = directory.removeprefix("//")  # file:///abs and file://rel too
        if directory:
            return FileStore(directory)
    raise ValueError(f"MODEL_STORE must be file:<dir> or s3://bucket/prefix, got {url!r}")

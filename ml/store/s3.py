"""The model store in an S3 bucket: the bucket's object versions are the model history, and index.json is
written only if it is still the one read (a conditional PUT)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ml.store.base import FORMAT, SUFFIX, IndexChanged, ModelStore, ModelVersion, StoreError

log = logging.getLogger(__name__)

# Small timeouts and few retries: an unreachable S3 should fail in seconds, not minutes.
S3_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
# S3's answers to a conditional PUT whose condition no longer holds (AWS may say either).
CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


class S3Store(ModelStore):
    """One key <prefix>/model.skops whose S3 object versions are the model history, plus <prefix>/index.json.

    Pickles from before skops live under <prefix>/model.pkl, so the two formats never share a key. Opening
    the store does not touch the network: an unreachable S3 is an error of each call, never of start-up.
    """

    def __init__(self, bucket: str, prefix: str, signing_key: bytes) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.describe = f"s3://{bucket}/{self.prefix}"
        self.signing_key = signing_key
        folder = f"{self.prefix}/" if self.prefix else ""
        self.artifact_keys = {fmt: f"{folder}model.{suffix}" for fmt, suffix in SUFFIX.items()}
        self.index_key = f"{folder}index.json"
        self._versioned = False
        self._read = threading.local()  # .etag: the ETag of the index this thread read last (None: there was none)
        with self._errors("opening the store"):
            # boto3 picks up AWS_ENDPOINT_URL and the credentials from the environment itself.
            self.client = boto3.client("s3", config=S3_CONFIG)

    @property
    def artifact_key(self) -> str:
        """Where new versions go."""
        return self.artifact_keys[FORMAT]

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

    def _ensure_versioning(self) -> None:
        """The bucket's own versioning keeps the history, so a store cannot save without it."""
        if self._versioned:
            return
        with self._errors("checking bucket versioning"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if status != "Enabled":
            self._enable_versioning()
        self._versioned = True

    def _enable_versioning(self) -> None:
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
                response = self.client.get_object(Bucket=self.bucket, Key=self.index_key)
            except self.client.exceptions.NoSuchKey:
                self._read.etag = None
                return None
            self._read.etag = response["ETag"]
            return response["Body"].read()

    def _write_index(self, data: bytes) -> None:
        # If this fails after an artifact upload, the index still lists only the old versions; the new
        # object version of model.skops is an orphan nobody points to, which is harmless.
        etag = getattr(self._read, "etag", None)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}  # still the index read, or still none
        with self._errors("writing index.json"):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.index_key, Body=data,
                                       ContentType="application/json", **condition)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in CONFLICT_CODES:
                    raise IndexChanged(f"{self.describe}: index.json kept changing under this update; "
                                       "another process writes it too") from err
                raise

    def _put_artifact(self, version: int, artifact: bytes) -> str:
        self._ensure_versioning()
        with self._errors(f"uploading model version {version}"):
            response = self.client.put_object(Bucket=self.bucket, Key=self.artifact_key, Body=artifact)
        object_version = response.get("VersionId")
        if not object_version or object_version == "null":  # someone suspended versioning since we opened
            raise StoreError(f"{self.describe}: the upload got no object version; is versioning suspended?")
        return object_version

    def _get_artifact(self, record: ModelVersion) -> bytes:
        with self._errors(f"downloading model version {record.version}"):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.artifact_keys[record.format], VersionId=record.object_version
            )
            return response["Body"].read()

"""The model store against real folders and a real moto S3 server with bucket versioning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

import ml.store.base
import ml.store.folder
import ml.store.s3
from ml.store import (
    BadIndex,
    ChecksumMismatch,
    ModelStore,
    Refused,
    StoreError,
    UnknownVersion,
    open_store,
)
from tests.fakes.services import free_port, new_bucket

KEY = "test-signing-key-0123456789"
META = {"rows": 1200, "labels": 3, "holdout": {"f1": 0.91}, "versions": {"sklearn": "1.6.1"}}


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> BaseClient:
    """A raw S3 client on the moto server, with boto3 in the code under test pointed at it too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    """An empty store of each kind."""
    if request.param == "file":
        return open_store(f"file:{tmp_path / 'models'}")
    return open_store(f"s3://{new_bucket(request.getfixturevalue('s3'))}/rigwatch/models", KEY)


def test_it_lists_saved_versions_oldest_first_with_their_metadata(store: ModelStore) -> None:
    first = store.save(b"model one", META)
    second = store.save(b"model two", {**META, "rows": 1500})

    assert [v.version for v in store.versions()] == [1, 2]
    assert store.versions() == [first, second]
    assert store.get(2).meta == {**META, "rows": 1500}
    assert second.size == len(b"model two")
    assert second.created.endswith("+00:00")


def test_it_activates_only_when_asked(store: ModelStore) -> None:
    assert store.active() is None
    store.save(b"model one", META)
    assert store.active() is None

    store.activate(1)
    store.save(b"model two", META)

    assert store.active() == 1


def test_it_refuses_unknown_versions(store: ModelStore) -> None:
    store.save(b"model one", META)

    with pytest.raises(UnknownVersion):
        store.activate(7)
    with pytest.raises(UnknownVersion):
        store.get(7)
    with pytest.raises(UnknownVersion):
        store.load(7)
    assert store.active() is None


def test_it_loads_the_exact_bytes_of_each_version(store: ModelStore) -> None:
    blobs = [bytes(range(256)) * 40, b"\x80\x05second model"]
    for blob in blobs:
        store.save(blob, META)

    assert [store.load(n) for n in (1, 2)] == blobs


def test_it_saves_nothing_when_the_index_write_fails(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(b"model one", META)
    store.activate(1)

    def broken(data: bytes) -> None:
        raise StoreError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_write_index", broken)
        with pytest.raises(StoreError):
            store.save(b"model two", META)

    assert [v.version for v in store.versions()] == [1]
    assert store.active() == 1
    assert store.save(b"model two", META).version == 2
    assert store.load(2) == b"model two"


def test_it_rejects_metadata_that_is_not_json_before_saving(store: ModelStore) -> None:
    with pytest.raises(TypeError):
        store.save(b"model", {"when": object()})

    assert store.versions() == []


def test_file_store_rejects_a_tampered_artifact(tmp_path: Path) -> None:
    store = open_store(f"file:{tmp_path}")
    store.save(b"trusted model", META)

    (tmp_path / "v0001.skops").write_bytes(b"evil bytes")

    with pytest.raises(ChecksumMismatch):
        store.load(1)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_processes_starting_together_on_an_empty_store_each_write_it_and_no_version_is_lost(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A bot and its workers started at once each find the store empty and save a first model.
    url = f"file:{tmp_path}" if kind == "file" else f"s3://{new_bucket(request.getfixturevalue('s3'))}/models"
    errors: list[Exception] = []

    def bootstrap() -> None:
        store = open_store(url, KEY)  # a store of its own, as in a process of its own
        try:
            for _ in range(20):
                store.activate(store.save(b"first model", META).version)
        except Exception as exc:
            errors.append(exc)

    starters = [threading.Thread(target=bootstrap) for _ in range(4)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()

    assert errors == []
    store = open_store(url, KEY)
    assert [r.version for r in store.versions()] == list(range(1, 81)), "every save is in the index"
    active = store.active()
    assert active is not None and store.load(active) == b"first model"
    assert not list(tmp_path.glob(".*.tmp"))


def test_file_store_keeps_an_index_and_one_file_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file:models")
    store.save(b"one", META)
    store.save(b"two", META)
    store.activate(2)

    assert store.describe == "file:models"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["index.json", "v0001.skops", "v0002.skops"]
    index = json.loads((tmp_path / "models" / "index.json").read_text())
    assert index["active"] == 2
    assert [v["version"] for v in index["versions"]] == [1, 2]


def test_file_store_leaves_no_half_written_file_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"file:{tmp_path}")
    store.save(b"one", META)

    def no_space(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ml.store.folder.os, "replace", no_space)
    with pytest.raises(StoreError, match="No space left"):
        store.save(b"two", META)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "v0001.skops"]
    assert [v.version for v in store.versions()] == [1]


def test_file_store_at_an_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    # A regular file in the way works even as root, where permission bits would not stop us.
    (tmp_path / "taken").write_text("not a folder")

    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"file:{tmp_path / 'taken' / 'models'}")


def test_s3_store_keeps_one_object_version_per_save_under_a_single_key(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    store = open_store(f"s3://{bucket}", KEY)
    saved = [store.save(f"model {n}".encode(), META) for n in (1, 2, 3)]

    listing = s3.list_object_versions(Bucket=bucket)["Versions"]

    assert store.describe == f"s3://{bucket}/"
    assert {v["Key"] for v in listing} == {"model.skops", "index.json"}
    listing = [v for v in listing if v["Key"] == "model.skops"]
    assert {v["VersionId"] for v in listing} == {r.object_version for r in saved}
    index = json.loads(s3.get_object(Bucket=bucket, Key="index.json")["Body"].read())
    assert [v["object_version"] for v in index["versions"]] == [r.object_version for r in saved]


def test_s3_store_refuses_an_index_edited_to_point_at_other_bytes(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    store = open_store(f"s3://{bucket}/models", KEY)
    store.save(b"trusted model", META)

    # A newer object version under the same key does not change what version 1 loads...
    evil = s3.put_object(Bucket=bucket, Key="models/model.skops", Body=b"evil bytes")["VersionId"]
    assert store.load(1) == b"trusted model"

    # ...and an index edited to point at it no longer carries our signature.
    index = json.loads(s3.get_object(Bucket=bucket, Key="models/index.json")["Body"].read())
    index["versions"][0]["object_version"] = evil
    s3.put_object(Bucket=bucket, Key="models/index.json", Body=json.dumps(index).encode())

    with pytest.raises(Refused, match="signature"):
        store.load(1)


def test_s3_store_enables_versioning_on_a_bucket_without_it(
    s3: BaseClient, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = new_bucket(s3, versioned=False)

    with caplog.at_level(logging.WARNING, logger="ml.store.s3"):
        saved = open_store(f"s3://{bucket}/models", KEY).save(b"model", META)

    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert f"enabled versioning on bucket {bucket}" in caplog.text
    assert saved.object_version


def test_s3_store_explains_when_it_may_not_enable_versioning(
    s3: BaseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(s3, versioned=False)
    real_client = boto3.client

    def deny(**kwargs: object) -> None:
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
        raise ClientError(error, "PutBucketVersioning")

    def client_without_the_right(*args: object, **kwargs: object) -> BaseClient:
        # moto grants everything, so the refusal an IAM policy would give is injected on the real client.
        client = real_client(*args, **kwargs)
        client.meta.events.register("before-call.s3.PutBucketVersioning", deny)
        return client

    monkeypatch.setattr(ml.store.s3.boto3, "client", client_without_the_right)

    with pytest.raises(StoreError, match=f"bucket {bucket} has no versioning and these credentials cannot"):
        open_store(f"s3://{bucket}/models", KEY).save(b"model", META)


def test_s3_store_names_a_missing_bucket(s3: BaseClient) -> None:
    with pytest.raises(StoreError, match="bucket no-such-bucket-here does not exist"):
        open_store("s3://no-such-bucket-here/models", KEY).versions()


def test_s3_store_fails_fast_and_readably_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    store = open_store("s3://models/rigwatch", KEY)  # opening never waits for the network
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.versions()

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "Could not connect" in message
    assert "very-secret-value" not in message and "Traceback" not in message and "\n" not in message


def test_s3_store_save_fails_as_store_error_when_the_endpoint_goes_away(
    s3: BaseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"s3://{new_bucket(s3)}/models", KEY)
    closed = f"http://127.0.0.1:{free_port()}"
    store.client = boto3.client("s3", endpoint_url=closed, config=ml.store.s3.S3_CONFIG)

    started = time.monotonic()
    with pytest.raises(StoreError, match="failed"):
        store.save(b"model", META)
    assert time.monotonic() - started < 5


def test_unknown_store_urls_name_the_variable() -> None:
    with pytest.raises(ValueError, match="MODEL_STORE"):
        open_store("ftp://x")
    with pytest.raises(ValueError, match="MODEL_STORE"):
        open_store("s3://", KEY)
    with pytest.raises(ValueError, match="MODEL_SIGNING_KEY"):
        open_store("s3://models/rigwatch")


def index_of(store: ModelStore) -> dict:
    return json.loads(store._read_index() or b"{}")


def test_entries_are_signed_and_the_key_is_never_stored(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    store = open_store(f"s3://{bucket}/models", KEY)
    store.save(b"model", META)
    store.activate(1)

    entry = index_of(store)["versions"][0]
    assert entry["format"] == "skops" and len(entry["signature"]) == 64
    for listed in s3.list_object_versions(Bucket=bucket)["Versions"]:
        body = s3.get_object(Bucket=bucket, Key=listed["Key"], VersionId=listed["VersionId"])["Body"].read()
        assert KEY.encode() not in body
    assert open_store(f"s3://{bucket}/models", KEY).load(1) == b"model"


@pytest.mark.parametrize("signature", [None, "0" * 64, "signed with another key"])
def test_a_planted_artifact_with_its_own_digest_and_a_forged_entry_is_refused(
    s3: BaseClient, signature: str | None
) -> None:
    bucket = new_bucket(s3)
    store = open_store(f"s3://{bucket}/models", KEY)
    store.activate(store.save(b"our model", META).version)
    planted = b"someone else's model"
    version_id = s3.put_object(Bucket=bucket, Key="models/model.skops", Body=planted)["VersionId"]
    index = index_of(store)
    forged = {**index["versions"][0], "version": 2, "object_version": version_id,
              "sha256": hashlib.sha256(planted).hexdigest(), "size": len(planted), "signature": signature}
    if signature == "signed with another key":
        other = open_store(f"s3://{bucket}/models", "another-key-0123456789")
        forged = dataclasses.asdict(other._sign(ml.store.base._record({**forged, "signature": None})))
    s3.put_object(Bucket=bucket, Key="models/index.json",
                  Body=json.dumps({"active": 2, "versions": [*index["versions"], forged]}).encode())

    with pytest.raises(Refused, match="model version 2"):
        store.load(2)
    assert store.load(1) == b"our model"


def test_a_folder_with_a_key_refuses_unsigned_entries_and_one_without_accepts_them(tmp_path: Path) -> None:
    open_store(f"file:{tmp_path}").save(b"model", META)

    assert open_store(f"file:{tmp_path}").load(1) == b"model"
    with pytest.raises(Refused, match="unsigned"):
        open_store(f"file:{tmp_path}", KEY).load(1)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


GOOD_ENTRY = {"version": 1, "created": "2025-01-01T00:00:00+00:00", "sha256": "a" * 64, "size": 5, "meta": {},
              "object_version": None, "format": "skops", "signature": None}
BAD_INDEXES = {
    "not json": b"{",
    "a list": b"[]",
    "deeply nested": f'{{"active": null, "versions": {deep(100_000)}}}'.encode(),
    "nested in meta": json.dumps({"active": None, "versions": [
        {**GOOD_ENTRY, "meta": json.loads(deep(40))}]}).encode(),
    "version is a path": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "version": "../evil"}]}).encode(),
    "version is a string": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "version": "1"}]}).encode(),
    "version is zero": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "version": 0}]}).encode(),
    "version is true": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "version": True}]}).encode(),
    "version twice": json.dumps({"active": 1, "versions": [GOOD_ENTRY, GOOD_ENTRY]}).encode(),
    "active is a path": json.dumps({"active": "../evil", "versions": [GOOD_ENTRY]}).encode(),
    "active is unknown": json.dumps({"active": 7, "versions": [GOOD_ENTRY]}).encode(),
    "missing field": json.dumps({"active": None, "versions": [{"version": 1}]}).encode(),
    "unknown field": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "run": "rm -rf /"}]}).encode(),
    "bad digest": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "sha256": "../x"}]}).encode(),
    "unknown format": json.dumps({"active": None, "versions": [{**GOOD_ENTRY, "format": "joblib"}]}).encode(),
    "no versions": json.dumps({"active": None}).encode(),
}


@pytest.mark.parametrize("content", BAD_INDEXES.values(), ids=BAD_INDEXES.keys())
def test_an_invalid_index_is_one_readable_error_and_is_never_overwritten(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "index.json").write_bytes(content)
    store = open_store(f"file:{tmp_path}")

    for action in (store.versions, store.active, lambda: store.load(1), lambda: store.save(b"model", META)):
        with pytest.raises(BadIndex) as caught:
            action()
        assert "index.json is not a valid model index" in str(caught.value) and "\n" not in str(caught.value)
    assert (tmp_path / "index.json").read_bytes() == content

"""Model artifacts: skops with an allowlist of types, pickles that never run code, and the migration of
pickle stores to skops, against real folders and a real moto S3 server."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from botocore.client import BaseClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ml import artifact, model
from ml.artifact import ArtifactError
from ml.store import Refused, open_store
from ml.training import Trained, train
from tests.fakes.models import evil_pickle, legacy_entry, pickle_folder

KEY = "test-signing-key-0123456789"
SAMPLES = [{"cpu_percent": 99.0, "load_1m": 3.0}, {"mem_percent": 40.0}, {}, {"disk_percent": 99.5}]


@pytest.fixture(scope="module")
def trained() -> Trained:
    return train(pd.DataFrame())


def predictions(pipeline: Pipeline) -> np.ndarray:
    return model.predict(pipeline, SAMPLES)


def test_the_trained_pipeline_round_trips_through_skops_with_the_same_predictions(trained: Trained) -> None:
    data = artifact.dumps(trained.pipeline)

    untrusted = set(sio.get_untrusted_types(data=data))
    assert untrusted <= artifact.ALLOWED_TYPES, f"read what these are, then allow them: {untrusted}"
    np.testing.assert_array_equal(predictions(artifact.loads(data)), predictions(trained.pipeline))


def test_a_type_outside_the_allowlist_is_refused_when_saving_and_when_loading() -> None:
    pipeline = Pipeline([("run", FunctionTransformer(func=os.system)), ("classify", LogisticRegression())])

    with pytest.raises(ArtifactError, match=r"outside the allowlist: \w+\.system"):
        artifact.dumps(pipeline)
    with pytest.raises(ArtifactError, match=r"outside the allowlist: \w+\.system"):
        artifact.loads(sio.dumps(pipeline))


@pytest.mark.parametrize("data", [sio.dumps({"coef": [1, 2]}), sio.dumps(LogisticRegression()), b"junk",
                                  pickle.dumps(Pipeline([]))], ids=["dict", "bare estimator", "junk", "pickle"])
def test_anything_but_a_skops_pipeline_is_refused(data: bytes) -> None:
    with pytest.raises(ArtifactError):
        artifact.loads(data)


def test_a_pickle_that_runs_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = evil_pickle(marker)

    with pytest.raises(ArtifactError, match=r"builtins\.exec"):
        artifact.from_legacy_pickle(payload)
    with pytest.raises(ArtifactError):
        artifact.loads(payload)
    assert not marker.exists()


def test_an_old_pickled_pipeline_converts_to_skops_with_the_same_predictions(trained: Trained) -> None:
    converted = artifact.from_legacy_pickle(pickle.dumps(trained.pipeline))

    np.testing.assert_array_equal(predictions(artifact.loads(converted)), predictions(trained.pipeline))


def test_a_folder_of_pickles_is_migrated_in_place_once(tmp_path: Path, trained: Trained) -> None:
    pickle_folder(tmp_path, [pickle.dumps(trained.pipeline), pickle.dumps(train(pd.DataFrame(), seed=1).pipeline)])
    store = open_store(f"file:{tmp_path}")
    with pytest.raises(Refused, match="not migrated"):
        store.load(2)

    assert store.migrate(artifact.from_legacy_pickle) == ([1, 2], [])
    assert store.migrate(artifact.from_legacy_pickle) == ([], [])

    assert [(v.version, v.format, v.meta["rows"]) for v in store.versions()] == [(1, "skops", 1), (2, "skops", 2)]
    assert store.active() == 2
    assert {"v0001.skops", "v0002.skops"} <= {p.name for p in tmp_path.iterdir()}
    np.testing.assert_array_equal(predictions(artifact.loads(store.load(1))), predictions(trained.pipeline))


def test_a_pickle_whose_digest_does_not_match_or_that_runs_code_is_refused(tmp_path: Path, trained: Trained) -> None:
    marker = tmp_path / "marker"
    pickle_folder(tmp_path / "models", [pickle.dumps(trained.pipeline), evil_pickle(marker)])
    (tmp_path / "models" / "v0001.pkl").write_bytes(pickle.dumps(trained.pipeline) + b"tampered")
    store = open_store(f"file:{tmp_path / 'models'}")

    migrated, refused = store.migrate(artifact.from_legacy_pickle)

    assert migrated == []
    assert "model version 1 not migrated" in refused[0] and "SHA-256" in refused[0]
    assert "model version 2 not migrated" in refused[1] and "builtins.exec" in refused[1]
    assert not marker.exists()
    with pytest.raises(Refused, match="not migrated"):
        store.load(2)


def test_unsigned_s3_pickles_are_migrated_only_when_an_operator_vouches_for_them(
    s3_endpoint: str, tmp_path: Path, trained: Trained
) -> None:
    s3: BaseClient = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    marker = tmp_path / "marker"
    entries = []
    for number, blob in enumerate([pickle.dumps(trained.pipeline), evil_pickle(marker)], 1):
        version_id = s3.put_object(Bucket=bucket, Key="fleet/model.pkl", Body=blob)["VersionId"]
        entries.append(legacy_entry(number, blob, version_id))
    s3.put_object(Bucket=bucket, Key="fleet/index.json", Body=json.dumps({"active": 1, "versions": entries}).encode())
    store = open_store(f"s3://{bucket}/fleet", KEY)

    migrated, refused = store.migrate(artifact.from_legacy_pickle)
    assert migrated == [] and all("unsigned" in line for line in refused)

    migrated, refused = store.migrate(artifact.from_legacy_pickle, vouch=True)
    assert migrated == [1] and "builtins.exec" in refused[0]
    assert not marker.exists()
    loaded = artifact.loads(open_store(f"s3://{bucket}/fleet", KEY).load(1))
    np.testing.assert_array_equal(predictions(loaded), predictions(trained.pipeline))
    keys = {v["Key"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]}
    assert keys == {"fleet/model.pkl", "fleet/model.skops", "fleet/index.json"}

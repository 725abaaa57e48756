"""What every model store does (ml/store/__init__.py opens one): versions as opaque bytes plus a signed index.

The store never parses an artifact: it hands back bytes only after the index entry is valid, signed (in a
store with a signing key) and in the current format, and their SHA-256 matches the entry. Whoever can write
the bucket can write index.json too, so the digest alone proves nothing there: each entry carries an HMAC
of its fields under MODEL_SIGNING_KEY, which the bucket never sees. Updates of the index are done again
from a fresh read when another writer overtook them.
"""


from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

log = logging.getLogger(__name__)

FORMAT = "skops"  # entries without a format are pickles from before it; only migrate() reads those
SUFFIX = {FORMAT: "skops", None: "pkl"}
SIGNED_CONTEXT = b"rigwatch model index entry v1\n"  # an entry's HMAC can never be valid for anything else
MAX_INDEX_BYTES = 8 * 1024 * 1024
MAX_INDEX_DEPTH = 32  # our index is 5 levels deep; a deeper one is not ours and could exhaust the stack
FIELDS = {"version", "created", "sha256", "size", "meta", "object_version", "format", "signature"}
REQUIRED = {"version", "created", "sha256", "size", "meta"}
INDEX_TRIES = 20  # an update of the index that other writers keep overtaking gives up after this many
T = TypeVar("T")


class StoreError(Exception):
    """The model store cannot be used (unreachable, misconfigured); message is for people."""


class ChecksumMismatch(StoreError):
    """An artifact's bytes do not match the SHA-256 recorded when it was saved."""


class UnknownVersion(StoreError):
    """The store has no model version with that number."""


class BadIndex(StoreError):
    """index.json is not an index this code wrote: nothing in it is used."""


class IndexChanged(StoreError):
    """Another process wrote the index between this one's read and its write."""


class Refused(StoreError):
    """An index entry that is not signed by our key or not in a format the bot loads."""


@dataclass(frozen=True)
class ModelVersion:
    """One saved model version, as recorded in the store's index."""

    version: int
    created: str
    sha256: str
    size: int
    meta: dict
    object_version: str | None = None
    format: str | None = None  # None: a pickle from before skops
    signature: str | None = None  # hex HMAC-SHA256 of the other fields, in a store with a signing key

    def signed_bytes(self) -> bytes:
        """What the signature covers: every other field, in one canonical JSON form."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "signature"}
        return SIGNED_CONTEXT + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _depth(value: object) -> int:
    """How deeply lists and objects nest in a parsed JSON value; iterative, so no depth can overflow it."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth < MAX_INDEX_DEPTH:
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _positive_int(value: object, what: str) -> int:
    """Version numbers end up in file names and replies: only a positive int is one (bool is not)."""
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} {str(value)[:40]!r} is not a positive integer")
    return value


def _record(entry: object) -> ModelVersion:
    """One index entry, checked field by field."""
    if not isinstance(entry, dict):
        raise ValueError("a version entry is not an object")
    if unknown := set(entry) - FIELDS:
        raise ValueError(f"a version entry has the unknown field {sorted(unknown)[0][:40]!r}")
    if missing := REQUIRED - set(entry):
        raise ValueError(f"a version entry lacks {sorted(missing)[0]!r}")
    version = _positive_int(entry["version"], "version")
    checks = {
        "created": isinstance(entry["created"], str),
        "sha256": isinstance(entry["sha256"], str) and len(entry["sha256"]) == 64
        and all(c in "0123456789abcdef" for c in entry["sha256"]),
        "size": type(entry["size"]) is int and entry["size"] >= 0,
        "meta": isinstance(entry["meta"], dict),
        "object_version": isinstance(entry.get("object_version"), str | None),
        "format": entry.get("format") in SUFFIX,
        "signature": isinstance(entry.get("signature"), str | None),
    }
    if bad := [name for name, ok in checks.items() if not ok]:
        raise ValueError(f"version {version} has an invalid {bad[0]}")
    return ModelVersion(**entry)


class ModelStore(ABC):
    """Versions, the active pointer and artifacts; subclasses only move the index and artifact bytes."""

    describe: str
    signing_key: bytes | None

    @property
    def signed(self) -> bool:
        """Whether entries are signed here and unsigned ones refused."""
        return self.signing_key is not None

    @abstractmethod
    def _read_index(self) -> bytes | None:
        """The stored index.json, or None when nothing was saved yet."""

    @abstractmethod
    def _write_index(self, data: bytes) -> None:
        """Replace the stored index.json in one step."""

    @abstractmethod
    def _put_artifact(self, version: int, artifact: bytes) -> str | None:
        """Store the bytes of a new version in the current format; returns the S3 VersionId, if any."""

    @abstractmethod
    def _get_artifact(self, record: ModelVersion) -> bytes:
        """The stored bytes of a version, unchecked."""

    def _index(self) -> tuple[int | None, list[ModelVersion]]:
        """The active version and all versions, oldest first."""
        data = self._read_index()
        if data is None:
            return None, []
        try:
            if len(data) > MAX_INDEX_BYTES:
                raise ValueError(f"{len(data)} bytes is too large")
            index = json.loads(data)
            if _depth(index) >= MAX_INDEX_DEPTH:
                raise ValueError("it nests too deeply")
            if not isinstance(index, dict) or set(index) != {"active", "versions"}:
                raise ValueError('it is not an object of "active" and "versions"')
            if not isinstance(index["versions"], list):
                raise ValueError('"versions" is not a list')
            records = sorted((_record(entry) for entry in index["versions"]), key=lambda r: r.version)
            numbers = [r.version for r in records]
            if len(set(numbers)) != len(numbers):
                raise ValueError("a version number appears twice")
            active = index["active"]
            if active is not None and _positive_int(active, "active version") not in numbers:
                raise ValueError(f"the active version {active} is not among the versions")
            return active, records
        except (ValueError, RecursionError) as err:  # RecursionError: json's own parser on deep nesting
            raise BadIndex(f"{self.describe}: index.json is not a valid model index: {str(err)[:200]}") from err

    def _store_index(self, active: int | None, records: list[ModelVersion]) -> None:
        """Write the index in the shared layout."""
        index = {"active": active, "versions": [dataclasses.asdict(r) for r in records]}
        self._write_index(json.dumps(index, indent=1).encode())

    def _sign(self, record: ModelVersion) -> ModelVersion:
        """The record with its signature, in a store with a key."""
        if self.signing_key is None:
            return record
        mac = hmac.new(self.signing_key, record.signed_bytes(), hashlib.sha256).hexdigest()
        return dataclasses.replace(record, signature=mac)

    def _check_signature(self, record: ModelVersion) -> None:
        """Refuse an entry that our key did not sign, in a store with a key."""
        if self.signing_key is None:
            return
        if record.signature is None:
            raise Refused(f"{self.describe}: model version {record.version} has an unsigned index entry; "
                          "refusing to use it")
        expected = hmac.new(self.signing_key, record.signed_bytes(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, record.signature):
            raise Refused(f"{self.describe}: the signature of model version {record.version} does not match "
                          "MODEL_SIGNING_KEY; refusing to use it")

    def _checked_bytes(self, record: ModelVersion) -> bytes:
        """The artifact of a record whose signature was checked, only if its SHA-256 matches."""
        data = self._get_artifact(record)
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            raise ChecksumMismatch(
                f"{self.describe}: model version {record.version} has SHA-256 {digest[:12]}..., "
                f"recorded {record.sha256[:12]}...; refusing to use it"
            )
        return data

    def _updating(self) -> contextlib.AbstractContextManager[object]:
        """Held while the index is read, changed and written back: another process's update waits."""
        return contextlib.nullcontext()

    def _update(self, change: Callable[[], T]) -> T:
        """Run `change` (read the index, change it, write it back) so that no other writer's update is lost:
        under _updating, and again from a fresh read whenever the write finds the index changed meanwhile."""
        def locked() -> T:
            with self._updating():
                return change()

        retrying = Retrying(retry=retry_if_exception_type(IndexChanged), stop=stop_after_attempt(INDEX_TRIES),
                            wait=wait_random(0, 0.2), reraise=True)
        return retrying(locked)

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

        def change() -> ModelVersion:
            active, records = self._index()
            number = max((r.version for r in records), default=0) + 1
            # Artifact first, index second: until the index names it, the version does not exist.
            object_version = self._put_artifact(number, artifact)
            record = self._sign(ModelVersion(
                version=number,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                sha256=hashlib.sha256(artifact).hexdigest(),
                size=len(artifact),
                meta=meta,
                object_version=object_version,
                format=FORMAT,
            ))
            self._store_index(active, [*records, record])
            return record

        record = self._update(change)
        log.info("saved model version %d (%d bytes) to %s", record.version, len(artifact), self.describe)
        return record

    def load(self, version: int) -> bytes:
        """The skops bytes of a version, only if its entry is signed (where the store signs) and their
        SHA-256 matches the entry: nothing is downloaded for an entry that fails."""
        record = self.get(version)
        self._check_signature(record)
        if record.format != FORMAT:
            raise Refused(f"{self.describe}: model version {version} is a pickle from before skops models and "
                          "was not migrated (the bot migrates signed ones; `python -m ml.migrate` vouches for "
                          "unsigned ones); refusing to load it")
        return self._checked_bytes(record)

    def migrate(self, convert: Callable[[bytes], bytes], vouch: bool = False) -> tuple[list[int], list[str]]:
        """Re-save every pickle version as skops in place (same number, new artifact, new digest, signed).

        A pickle is converted only if its entry is signed (where the store signs; `vouch` is an operator
        saying the unsigned entries are theirs) and its SHA-256 matches. Returns the versions migrated and
        one line per version refused, which stays as it was and is never loaded.
        """
        return self._update(lambda: self._migrate(convert, vouch))

    def _migrate(self, convert: Callable[[bytes], bytes], vouch: bool) -> tuple[list[int], list[str]]:
        active, records = self._index()
        migrated: list[int] = []
        refused: list[str] = []
        for position, record in enumerate(records):
            if record.format is not None:
                continue
            try:
                if not vouch:
                    self._check_signature(record)
                converted = convert(self._checked_bytes(record))
            except StoreError as exc:  # an ArtifactError too: a pickle of anything but a model pipeline
                refused.append(f"model version {record.version} not migrated: {exc}")
                continue
            object_version = self._put_artifact(record.version, converted)
            records[position] = self._sign(dataclasses.replace(
                record, sha256=hashlib.sha256(converted).hexdigest(), size=len(converted),
                object_version=object_version, format=FORMAT, signature=None,
                meta={**record.meta, "migrated_from": {"format": "pickle", "sha256": record.sha256}},
            ))
            migrated.append(record.version)
        if migrated:
            self._store_index(active, records)
            log.info("migrated model versions %s of %s from pickle to skops in place",
                     ", ".join(f"v{n}" for n in migrated), self.describe)
        return migrated, refused

    def active(self) -> int | None:
        """The active version, or None when none is active."""
        return self._index()[0]

    def activate(self, version: int) -> None:
        """Make a saved version the active one; UnknownVersion if absent."""
        def change() -> None:
            _, records = self._index()
            if version not in {r.version for r in records}:
                raise UnknownVersion(f"{self.describe} has no model version {version}")
            self._store_index(version, records)

        self._update(change)
        log.info("activated model version %d in %s", version, self.describe)

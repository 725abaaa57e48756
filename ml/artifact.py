"""The bytes of a model version: a scikit-learn Pipeline in the skops format, which loading cannot turn into
code, and the one-way conversion of the pickles stored before it.

skops builds only the types it trusts by default (scikit-learn estimators, plain containers) and those a
caller names; this module names an explicit allowlist and refuses an artifact holding anything else, so no
`trusted=True` anywhere. Only call `loads` on bytes whose SHA-256 the model store has verified.
"""

from __future__ import annotations

import io
import pickle
from types import ModuleType
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from ml.store import StoreError

# Types outside skops' default trust that our pipeline holds. When the pipeline changes, the round trip
# test in tests/test_artifact.py names any type that is missing here; add it only after reading what it is.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "numpy.dtype",
    # SplineTransformer keeps one scipy BSpline per metric (knots and coefficients: data, no code) and a
    # reference to the array-API shim of numpy.asarray, which it calls to build arrays.
    "scipy.interpolate._bsplines.BSpline",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
})

# What numpy writes into a pickle of arrays and scalars (numpy.core before numpy 2, numpy._core since), and
# the one builtin a pipeline holds.
PICKLE_NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "slice"),  # ColumnTransformer's output_indices_
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
})


class ArtifactError(StoreError):
    """Bytes that are not a model this code may load; the message is for people."""


def _skops() -> ModuleType:
    """skops.io, imported when a model is first read or written: importing it takes about half a second of CPU
    (it reads much of scikit-learn), which a starting bot spends beside its other work instead of before it."""
    import skops.io

    return skops.io


def _untrusted(data: bytes) -> list[str]:
    """The types skops would not build on its own; raises ArtifactError for any outside the allowlist."""
    sio = _skops()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as err:  # skops raises anything from zipfile, json and its own schema checks
        raise ArtifactError(f"the artifact is not a skops file ({type(err).__name__})") from err
    if refused := sorted(set(untrusted) - ALLOWED_TYPES):
        raise ArtifactError(f"the artifact holds types outside the allowlist: {', '.join(refused)[:200]}")
    return untrusted


def dumps(pipeline: Pipeline) -> bytes:
    """The skops bytes of a pipeline; refuses one that `loads` would refuse, so no unloadable model is saved."""
    data = _skops().dumps(pipeline)
    _untrusted(data)
    return data


def loads(data: bytes) -> Pipeline:
    """The pipeline in skops bytes, built only from trusted and allowlisted types."""
    untrusted = _untrusted(data)
    try:
        loaded: Any = _skops().loads(data, trusted=untrusted)
    except Exception as err:  # a malformed file fails in many ways; none of them may escape as a crash
        raise ArtifactError(f"the artifact cannot be read as a model ({type(err).__name__})") from err
    if not isinstance(loaded, Pipeline):
        raise ArtifactError(f"the artifact holds a {type(loaded).__name__}, not a scikit-learn Pipeline")
    return loaded


class _ModelUnpickler(pickle.Unpickler):
    """Resolves only scikit-learn estimator classes, numpy's array helpers and the allowlisted types: a pickle
    naming any other callable (os.system, builtins.eval, ...) fails before anything of it runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PICKLE_NUMPY_GLOBALS or f"{module}.{name}" in ALLOWED_TYPES:
            return super().find_class(module, name)
        if (module == "sklearn" or module.startswith("sklearn.")) and "." not in name:
            found = super().find_class(module, name)  # imports a module of scikit-learn, not of the pickle
            if isinstance(found, type) and issubclass(found, BaseEstimator):
                return found
        raise ArtifactError(f"the pickle refers to {module[:60]}.{name[:60]}, which no model pipeline holds")


def from_legacy_pickle(data: bytes) -> bytes:
    """The skops bytes of a pipeline stored as a pickle before skops; refuses a pickle of anything else."""
    try:
        loaded = _ModelUnpickler(io.BytesIO(data)).load()
    except ArtifactError:
        raise
    except Exception as err:
        raise ArtifactError(f"the pickle cannot be read as a model ({type(err).__name__})") from err
    if not isinstance(loaded, Pipeline):
        raise ArtifactError(f"the pickle holds a {type(loaded).__name__}, not a scikit-learn Pipeline")
    return dumps(loaded)

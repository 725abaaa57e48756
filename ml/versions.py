"""`python -m ml.versions`: every model version, newest first, with its scores and which is active."""

from __future__ import annotations

import sys

from ml.registry import ModelVersion, StoreError, open_store


def _score(version: ModelVersion, name: str) -> str:
    value = version.meta.get("scores", {}).get(name)
    return "n/a" if value is None else f"{value:.3f}"


def table(versions: list[ModelVersion], active: int | None) -> str:
    """Plain text, one version per line, newest first."""
    lines = ["   ver  created           rows     labels  F1     prec   recall"]
    for v in reversed(versions):
        mark = "▶" if v.version == active else " "
        lines.append(
            f"{mark} v{v.version:<4} {v.created[:16].replace('T', ' '):<16}  {v.meta.get('rows', 0):<8} "
            f"{v.meta.get('labels', 0):<7} {_score(v, 'f1'):<6} {_score(v, 'precision'):<6} {_score(v, 'recall')}"
        )
    return "\n".join(lines)


def main() -> None:
    from ml.config import ConfigError, load_store_settings

    try:
        settings = load_store_settings()
        model_store = open_store(settings.model_store, settings.model_signing_key)
        versions, active = model_store.versions(), model_store.active()
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    print(table(versions, active) if versions else "The model store is empty.")


if __name__ == "__main__":
    main()

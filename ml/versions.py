"""`python -m ml.versions`: every model version, newest first, with its scores and which is active."""

from __future__ import annotations

import sys

from ml.store import ModelVersion, StoreError, open_store


def _score(version: ModelVersion, name: str) -> str:
    value = version.meta.get("scores", {}).get(name)
    return "n/a" if value is None else f"{value:.3f}"


def versions_table(versions: list[ModelVersion], active: int | None) -> str:
    """Plain text, one version per line, newest first."""
    lines = ["   ver  created           rows     labels  F1     prec   recall"]
    for v in reversed(versions):
        mark = "▶" if v.version == active else " "
        lines.append(
            f"{mark} v{v.version:<4} {v.created[:16].replace('T', ' '):<16}  {v.meta.get('rows', 0):<8} "
            f"{v.meta.get('labels', 0):<7} {_score(v, 'f1'):<6} {_score(v, 'precision'):<6} {_score(v, 'recall')}"
        )
    return "\n".join(lines)


def holdout(version: ModelVersion) -> str:
    """What a version's scores were measured on: 'holdout: 48 human-labelled samples, 48 rows'."""
    return f"holdout: {version.meta.get('holdout', 'n/a')}, {version.meta.get('holdout_rows', 0)} rows"


def scores(version: ModelVersion) -> str:
    """A version's scores on its holdout: 'F1 0.912  precision 0.900  recall 0.930  ROC AUC 0.980  Brier 0.0123'."""
    brier = version.meta.get("scores", {}).get("brier")
    return (f"F1 {_score(version, 'f1')}  precision {_score(version, 'precision')}  "
            f"recall {_score(version, 'recall')}  ROC AUC {_score(version, 'roc_auc')}  "
            f"Brier {'n/a' if brier is None else f'{brier:.4f}'}")


def version_detail(version: ModelVersion, active: int | None) -> str:
    """One version in full: how it was trained and how it scored, with its reliability table."""
    meta = version.meta
    lines = [
        f"v{version.version}{' (active)' if version.version == active else ''}, created {version.created[:16]}",
        f"trained on {meta.get('rows', 0)} samples, {meta.get('labels', 0)} labels, {meta.get('synthetic', 0)} "
        f"synthetic; {meta.get('left_out_near_edge', 0)} unlabelled samples near an edge left out",
        holdout(version),
        scores(version),
    ]
    reliability = meta.get("scores", {}).get("reliability")
    if reliability:
        lines += ["", "reliability: predicted vs observed share stressed", "P bin     rows  predicted  observed"]
        for row in reliability:
            shown = [("   -" if row[key] is None else f"{row[key]:.2f}") for key in ("predicted", "observed")]
            lines.append(f"{row['bin']:<8} {row['rows']:>5}  {shown[0]:>9}  {shown[1]:>8}")
    lines.append(f"SHA-256 {version.sha256[:16]}…, {version.size} bytes")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ml.config import ConfigError, load_store_settings

    parser = argparse.ArgumentParser(prog="python -m ml.versions", description=__doc__)
    parser.add_argument("version", nargs="?", type=int, help="show this version in full")
    args = parser.parse_args(argv)
    try:
        settings = load_store_settings()
        model_store = open_store(settings.model_store, settings.model_signing_key)
        versions, active = model_store.versions(), model_store.active()
        chosen = model_store.get(args.version) if args.version is not None else None
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    if chosen is not None:
        print(version_detail(chosen, active))
    else:
        print(versions_table(versions, active) if versions else "The model store is empty.")


if __name__ == "__main__":
    main()

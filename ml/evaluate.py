"""`python -m ml.evaluate`: the active model's P(stressed) on every scenario an operator recognises.

Exits non-zero when a scenario fails, so a script or CI can refuse a model that misses a full disk or alerts on a
busy, healthy machine. With an empty model store it evaluates the model the bot would train first (from synthetic
data alone). The replay table, histories sent through the bot's own decisions, is `python -m bot.replay`.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from sklearn.pipeline import Pipeline

from ml import artifact
from ml.config import ConfigError, load_store_settings
from ml.scenarios import evaluate, report, scenarios
from ml.store import StoreError, open_store
from ml.training import train


def chosen_model(version: int | None) -> Pipeline:
    """The model to evaluate: `version`, else the active one, else the first the bot would train; says which.
    Exits with one line when the store or its settings cannot be used."""
    try:
        settings = load_store_settings()
        model_store = open_store(settings.model_store, settings.model_signing_key)
        version = version if version is not None else model_store.active()
        if version is None:
            print(f"{model_store.describe} has no active model: evaluating the first model the bot would train")
            return train(pd.DataFrame()).pipeline
        print(f"model v{version} of {model_store.describe}")
        return artifact.loads(model_store.load(version))
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ml.evaluate",
        description="Print the model's P(stressed) on every scenario an operator recognises; exit 1 if one fails.")
    parser.add_argument("--version", type=int, help="evaluate this model version instead of the active one")
    parser.add_argument("--every-sensor-subset", action="store_true",
                        help="the busy healthy machine with all 63 subsets of missing sensors, not 12")
    args = parser.parse_args(argv)
    verdicts = evaluate(chosen_model(args.version), scenarios(every_sensor_subset=args.every_sensor_subset))
    print(report(verdicts))
    if not all(v.holds for v in verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()

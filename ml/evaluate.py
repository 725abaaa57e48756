"""`python -m ml.evaluate`: the active model's P(stressed) on every scenario an operator recognises, then the
replay table: histories sent through the bot's own decisions, with each developing problem's lead time and each
healthy pattern's alerts per week (bot/pipeline/replay.py).

Exits non-zero when a scenario or a replay fails, so a script or CI can refuse a model that misses a full disk
or alerts on a busy, healthy machine. With an empty model store it evaluates the model the bot would train
first (from synthetic data alone).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from ml import artifact
from ml.config import ConfigError, load_store_settings
from ml.registry import StoreError, open_store
from ml.scenarios import evaluate, report, scenarios
from ml.training import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, help="evaluate this model version instead of the active one")
    parser.add_argument("--every-sensor-subset", action="store_true",
                        help="the busy healthy machine with all 63 subsets of missing sensors, not 12")
    parser.add_argument("--no-replay", action="store_true", help="the scenario table only")
    args = parser.parse_args(argv)
    try:
        settings = load_store_settings()
        model_store = open_store(settings.model_store, settings.model_signing_key)
        version = args.version if args.version is not None else model_store.active()
        if version is None:
            print(f"{model_store.describe} has no active model: evaluating the first model the bot would train")
            pipeline = train(pd.DataFrame()).pipeline
        else:
            print(f"model v{version} of {model_store.describe}")
            pipeline = artifact.loads(model_store.load(version))
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    verdicts = evaluate(pipeline, scenarios(every_sensor_subset=args.every_sensor_subset))
    print(report(verdicts))
    held = all(v.holds for v in verdicts)
    if not args.no_replay:
        # The replay runs the bot's own decisions, so only it imports the bot: the rest of the model tools
        # stay free of it.
        from bot.pipeline import replay

        print()
        outcomes = replay.replay(pipeline)
        print(replay.report(outcomes))
        held = held and all(o.holds for o in outcomes)
    if not held:
        sys.exit(1)


if __name__ == "__main__":
    main()

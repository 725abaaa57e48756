"""`python -m ml.train`: train from the store like /retrain, save a new version, activate it when not worse."""

from __future__ import annotations

import argparse
import logging
import sys

from ml import artifact, data
from ml.config import ConfigError, load_store_settings
from ml.features import FEATURES
from ml.retrain import retrain
from ml.store import StoreError, open_store
from schema.tables import open_database


def main(argv: list[str] | None = None) -> None:
    """Train from the store like /retrain: save a new version, activate it when it is not worse."""
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic samples and the split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = load_store_settings()
        open_database(settings.database_url)
        model_store = open_store(settings.model_store, settings.model_signing_key)
        active_version = model_store.active()
        active = None
        if active_version is not None:
            active = (active_version, artifact.loads(model_store.load(active_version)))
        result = retrain(model_store, active, lambda: data.training_frame(FEATURES), print, args.seed)
        if result.better:
            model_store.activate(result.saved.version)
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    kept = f"v{result.old_version} stays" if result.old_version else "no model is active"
    state = "active" if result.better else f"saved, not active ({kept}; /rollback {result.saved.version} activates it)"
    print(f"v{result.saved.version} {state}: {result.reason}")


if __name__ == "__main__":
    main()

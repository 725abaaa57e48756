"""`python -m ml.migrate`: convert the pickle versions of the model store to signed skops ones.

The bot migrates a pickle by itself when its entry is signed, or in a folder store without a key. Entries
written before signing carry no signature, so in an S3 store only an operator can vouch for them: this
command, run by someone who trusts the bucket's current content. Digests are still checked and the pickles
are read with the restricted unpickler of ml.artifact, so a pickle that names any code is still refused.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    from ml import artifact
    from ml.config import ConfigError, load_store_settings
    from ml.store import StoreError, open_store

    parser = argparse.ArgumentParser(prog="python -m ml.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--vouch-for-unsigned", action="store_true", required=True,
                        help="I trust the unsigned pickle versions in this store as they are now")
    parser.parse_args(argv)
    try:
        settings = load_store_settings()
        model_store = open_store(settings.model_store, settings.model_signing_key)
        migrated, refused = model_store.migrate(artifact.from_legacy_pickle, vouch=True)
    except (ConfigError, StoreError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    for line in refused:
        print(line)
    print(f"migrated {', '.join(f'v{n}' for n in migrated)}" if migrated else "no pickle version to migrate")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    main()

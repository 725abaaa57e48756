"""`python -m ml.export --out data.csv`: every stored sample with its prediction and label, for a notebook."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime

from agent.vocabulary import KNOWN_METRICS

COLUMNS = ["id", "device", "ts", *KNOWN_METRICS, "extra", "p_stressed", "model_version"]
CHUNK = 50_000


def main(argv: list[str] | None = None) -> None:
    from ml import data
    from ml.config import ConfigError, load_store_settings
    from schema.streaming import streamed
    from schema.tables import KeptSample, Metric, open_database

    parser = argparse.ArgumentParser(prog="python -m ml.export", description=__doc__)
    parser.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    args = parser.parse_args(argv)
    try:
        open_database(load_store_settings().database_url)
    except ConfigError as exc:
        sys.exit(f"rigwatch: {exc}")
    labels = data.latest_labels()
    # The samples, then those kept raw past the retention (on PostgreSQL, in their own table once their day is gone).
    tables = [Metric, KeptSample] if KeptSample.table_exists() else [Metric]
    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="")  # noqa: SIM115
    count = 0
    with out:
        writer = csv.writer(out)
        writer.writerow([*COLUMNS, "time_utc", "label"])
        for table in tables:
            query = table.select(*(getattr(table, name) for name in COLUMNS)).order_by(table.id)
            with streamed(*query.sql()) as cursor:
                while rows := cursor.fetchmany(CHUNK):
                    for row in rows:
                        time_utc = datetime.fromtimestamp(row[2], UTC).isoformat()
                        writer.writerow([*row, time_utc, labels.get(row[0], "")])
                    count += len(rows)
    if args.out != "-":
        print(f"wrote {count} samples to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

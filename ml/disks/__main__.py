"""`python -m ml.disks evaluate PATH` and `python -m ml.disks train PATH`: the disk model on Backblaze's data."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ml.disks import backblaze
from ml.disks.evaluate import FOLDS, SEED, evaluate, rows, table
from ml.disks.saved import SHIPPED, save
from ml.disks.training import train

DESCRIPTION = ("Trains and scores the disk-failure model, which predicts from a disk's daily SMART readings the "
               "chance that it fails within 30 days.")
PATH_HELP = ("A file or a folder of Backblaze's daily drive stats (CSV, plain or gzipped). A folder is read with "
             "every .csv and .csv.gz file below it. Columns the files lack are read as missing, never as zero.")
EVALUATE_HELP = ("Scores every drive with a model trained without it (folds by drive), and prints one table: for "
                 "the model's whole curve and for three simple rules, the failing drives warned 7 days or more "
                 "ahead, the median days of warning, and the share of healthy drives flagged. It marks the alert "
                 "threshold picked from the curve.")
TRAIN_HELP = ("Picks the alert threshold on held-out drives as evaluate does, then trains the model on every "
              "drive and saves it as a skops file with a JSON record of its SHA-256, threshold and figures.")


def _help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's own -h says "show this help message and exit"; this one says it as a sentence."""
    parser.add_argument("-h", "--help", action="help", help="Shows this help and exits.")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    _help(parser)
    parser.add_argument("path", metavar="PATH", type=Path, help=PATH_HELP)
    parser.add_argument("--folds", type=int, default=FOLDS,
                        help=f"The number of folds the drives are split into. The default is {FOLDS}.")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"The seed of the split, so that a run can be repeated. The default is {SEED}.")


def parser() -> argparse.ArgumentParser:
    top = _help(argparse.ArgumentParser(prog="python -m ml.disks", description=DESCRIPTION, add_help=False))
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                  help="Either evaluate or train; each takes --help.")
    scoring = commands.add_parser("evaluate", help="Scores the model on held-out drives beside the rules.",
                                  description=EVALUATE_HELP, add_help=False)
    _common(scoring)
    scoring.add_argument("--out", metavar="FILE", type=Path,
                         help="Also writes one CSV row per drive to this file: serial_number, first_warned and "
                              "failed_on (dates, or empty when there is none), then the first day each rule "
                              "fired, so that every figure of the table can be recomputed.")
    training = commands.add_parser("train", help="Trains the model on every drive and saves it.",
                                   description=TRAIN_HELP, add_help=False)
    _common(training)
    training.add_argument("--out", metavar="FILE", type=Path, default=SHIPPED,
                          help="The skops file to write; its JSON record is written beside it with the suffix "
                               ".json. The default is the model that ships with Rigwatch.")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        readings = backblaze.read(args.path)
        if args.command == "evaluate":
            evaluation = evaluate(readings, count=args.folds, seed=args.seed)
        else:
            pipeline, meta = train(readings, folds=args.folds, seed=args.seed)
    except (OSError, ValueError) as exc:
        sys.exit(f"rigwatch: {exc}")
    if args.command == "evaluate":
        print(table(evaluation))
        if args.out:
            written = rows(evaluation)
            with open(args.out, "w", newline="") as out:
                writer = csv.DictWriter(out, fieldnames=list(written[0]))
                writer.writeheader()
                writer.writerows(written)
        return
    meta["trained_on"]["files"] = [name.name for name in backblaze.files(args.path)]
    digest = save(pipeline, meta, args.out)
    figures = meta["evaluation"]["model"]
    print(f"Trained on {meta['trained_on']['drives']} drives ({meta['trained_on']['failed']} failed). Alert "
          f"threshold P >= {meta['threshold']:.4g}: held out, it warned {figures['ahead']} of {figures['failing']} "
          f"failing drives 7 days or more ahead and flagged {100 * figures['flagged_share']:.2f} % of the healthy "
          f"ones.")
    print(f"Saved {args.out} (SHA-256 {digest}).")


if __name__ == "__main__":
    main()

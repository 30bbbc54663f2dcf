"""Where a command records its run metrics: the database URL and run id flags every writer shares.

Standard library only, so commands that run where SQLAlchemy is not installed (the serving image) still
parse these flags; common/metrics_db.py is imported only when a database is actually given.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DB_ENV, RUN_ENV = "CLOUDTUNE_METRICS_DB", "CLOUDTUNE_RUN_ID"


@dataclass(frozen=True)
class MetricsTarget:
    """Where a command records its numbers: a database URL and the run they belong to."""

    url: str
    run_id: str


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run metrics")
    group.add_argument("--db", default=os.environ.get(DB_ENV),
                       help=f"SQLAlchemy URL of the run-metrics database, e.g. sqlite:///artifacts/metrics.sqlite (default: ${DB_ENV}; unset: not recorded)")
    group.add_argument("--run-id", default=os.environ.get(RUN_ENV), help=f"the run these numbers belong to (default: ${RUN_ENV})")


def metrics_target(args: argparse.Namespace) -> MetricsTarget | None:
    """None when no database is configured; an error when a database is given without a run."""
    if not getattr(args, "db", None):
        return None
    if not args.run_id:
        raise SystemExit(f"--db needs --run-id (or ${RUN_ENV}) to know which run the numbers belong to")
    return MetricsTarget(args.db, args.run_id)

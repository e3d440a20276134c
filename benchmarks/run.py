"""Run every benchmark and print its figures (`make bench`). Benchmarks are not tests.

They run against a database of their own (``abaco_bench`` on the embedded server, or the server
named by ``BENCH_DATABASE_URL``) so the development data is never touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loans", type=int, default=int(os.environ.get("BENCH_LOANS", "1000000")))
    parser.add_argument(
        "--skip-import",
        action="store_true",
        help="Reuse the book already loaded; only the KPI benchmark.",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "abaco.settings")
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ["EMBEDDED_DB_NAME"] = "abaco_bench"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from benchmarks import kpi_snapshots, tape_import

    if not args.skip_import:
        tape_import.run(loans=args.loans)
    kpi_snapshots.run()


if __name__ == "__main__":
    main()

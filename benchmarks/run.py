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
        "--working-capital-share",
        type=float,
        default=float(os.environ.get("BENCH_WORKING_CAPITAL_SHARE", "0.7")),
        help=(
            "Share of instalment loans in the generated tape; 0.7 (the default) gives about 10 "
            "schedule and cash rows per loan, 10M for a million loans."
        ),
    )
    parser.add_argument(
        "--skip-import",
        action="store_true",
        help="Reuse the book already loaded; the KPI and page benchmarks.",
    )
    parser.add_argument(
        "--pages-only",
        action="store_true",
        help="Reuse the book and snapshots already stored; only the page latency benchmark.",
    )
    parser.add_argument(
        "--demo-remove-only",
        action="store_true",
        help="Reuse the book already loaded; only load the demo tape into it and time its removal.",
    )
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="Reuse the book and snapshots already stored; only the REST API benchmark.",
    )
    parser.add_argument(
        "--hubspot-only",
        action="store_true",
        help="Only the HubSpot sync benchmark (100,000 contacts from the local fake; about 2 min).",
    )
    parser.add_argument(
        "--insights-only",
        action="store_true",
        help="Only the AI insights benchmark (digest size, tokens, latency from the local fake).",
    )
    parser.add_argument(
        "--restatement-only",
        action="store_true",
        help="Reuse the book and snapshots already stored; only the restatement benchmark "
        "(it changes 1%% of the payments, so run it on a copy of a book you keep).",
    )
    parser.add_argument(
        "--zip-bomb-only",
        action="store_true",
        help="Only the ZIP bomb refusal (builds a 4 GiB-in-4 MB ZIP first, about a minute).",
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
    call_command("createcachetable")  # the page cache and the cluster's heartbeat, as deployed

    from benchmarks import (
        api,
        demo_remove,
        hubspot_sync,
        insights,
        kpi_snapshots,
        pages,
        restatement,
        tape_import,
        zip_bomb,
    )

    if args.api_only:
        api.run()
        return
    if args.insights_only:
        insights.run()
        return
    if args.demo_remove_only:
        demo_remove.run()
        return
    if args.restatement_only:
        restatement.run()
        return
    if args.zip_bomb_only:
        zip_bomb.run()
        return
    if args.hubspot_only:
        hubspot_sync.run()
        return
    if args.pages_only:
        pages.run()
        return
    if not args.skip_import:
        tape_import.run(loans=args.loans, working_capital_share=args.working_capital_share)
    kpi_snapshots.run()
    pages.run()
    api.run()
    insights.run()
    restatement.run()  # last of the book's benchmarks: it changes 1% of the payments
    hubspot_sync.run()
    demo_remove.run()
    zip_bomb.run()


if __name__ == "__main__":
    main()

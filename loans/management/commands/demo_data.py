"""Generate a synthetic Cascade tape, load it, and create one demo user per role.

Why: the product is only worth looking at with a loan book in it, and the real tape may not leave
``shared/data``. This command gives a fresh checkout a realistic, reproducible book (see
``loans.demo``) through the same import path real tapes take, plus a login for every role of
docs/design.md, so the README quickstart is one command. ``--scale`` writes big tapes for benchmarks;
``--no-load`` only writes the files.

Demo data is its own source (``demo``) and its own lending entities (ids and entities start
``DEMO-``), so once real tapes arrive ``--remove`` (``--dry-run`` first) takes every demo row,
batch and raw file out again and queues the recomputation of the snapshots it touched.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from datetime import date
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from abaco.cli import iso_date
from abaco.roles import STAFF_ROLES, Role
from loans.demo import DEMO_PREFIX, DEMO_SOURCE, WORKING_CAPITAL_SHARE, tape_generate
from loans.models import Loan

# username -> role; one login per role of docs/design.md.
DEMO_USERS: dict[str, Role] = {
    "uploader": Role.UPLOADER,
    "steward": Role.STEWARD,
    "manager": Role.MANAGER,
    "auditor": Role.AUDITOR,
    "admin": Role.ADMIN,
    "api": Role.API_CLIENT,
}


def demo_users_ensure() -> dict[str, str | None]:
    """Make sure each demo user exists, in its role's group, with its role's admin flags.

    Returns username -> the new password for users created now, None for users that already
    existed: their passwords are never changed, so a rerun does not lock anyone out.
    """
    User = get_user_model()
    passwords: dict[str, str | None] = {}
    with transaction.atomic():
        for username, role in DEMO_USERS.items():
            group, _ = Group.objects.get_or_create(name=role.value)
            user, created = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@abaco.example"}
            )
            user.is_staff = role in STAFF_ROLES
            user.is_superuser = role is Role.ADMIN
            if created and role is Role.API_CLIENT:
                user.set_unusable_password()  # token only (abaco.second_factor.token_only)
                passwords[username] = None
            elif created:
                passwords[username] = secrets.token_urlsafe(12)
                user.set_password(passwords[username])
            else:
                passwords[username] = None
            user.save()
            user.groups.add(group)
    return passwords


class Command(BaseCommand):
    help = (
        "Write a synthetic Cascade loan tape (customers, loans, schedules, transactions), load it "
        "with tape_import and create one demo user per role. --no-load only writes the files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=7, help="Same seed, same tape (default 7).")
        parser.add_argument("--loans", type=int, default=5000, help="Loans to generate.")
        parser.add_argument("--customers", type=int, default=300, help="Customers to generate.")
        parser.add_argument(
            "--scale",
            type=int,
            metavar="N",
            help="N loans and max(300, N // 15) customers, e.g. 1000000 for benchmarks.",
        )
        parser.add_argument(
            "--working-capital-share",
            type=float,
            default=WORKING_CAPITAL_SHARE,
            metavar="SHARE",
            help=(
                "Share of disbursements that are monthly instalment loans rather than one-off "
                f"factoring (default {WORKING_CAPITAL_SHARE}); 0.7 gives about 10 schedule and "
                "cash rows per loan, the benchmark book's density."
            ),
        )
        parser.add_argument(
            "--out",
            type=Path,
            help="Directory for the CSVs (default: a new one under .data/demo/).",
        )
        parser.add_argument(
            "--no-load", action="store_true", help="Only write the files and print their sizes."
        )
        parser.add_argument(
            "--as-of", type=iso_date, default=date(2025, 11, 30), help="Tape date (YYYY-MM-DD)."
        )
        parser.add_argument(
            "--force", action="store_true", help="Load even if the database already has loans."
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Load only into a database without loans; otherwise just ensure the demo users (make run).",
        )
        parser.add_argument(
            "--remove",
            action="store_true",
            help="Remove every demo row, its batches and raw files (real rows stay as they are), "
            "and queue the recomputation of the snapshots it touched.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="With --remove: count what would be removed, change nothing.",
        )

    def handle(self, *args, **options) -> None:
        if options["remove"]:
            self.remove(dry_run=options["dry_run"])
            return
        if options["dry_run"]:
            raise CommandError("--dry-run goes with --remove.")
        loans, customers = options["loans"], options["customers"]
        if options["scale"] is not None:
            loans, customers = options["scale"], max(300, options["scale"] // 15)
        if loans < 1 or customers < 1:
            raise CommandError("--loans, --customers and --scale must be at least 1.")
        if not 0 <= options["working_capital_share"] <= 1:
            raise CommandError("--working-capital-share must lie between 0 and 1.")
        load = not options["no_load"]
        if load and options["if_empty"] and Loan.objects.exists():
            self.stdout.write("The database already has loans: no demo data loaded.")
            self.users_report(demo_users_ensure())
            return
        if load and not options["force"] and Loan.objects.exists():
            raise CommandError(
                "The database already has loans; demo data would mix with them. "
                "Use --no-load to only write files, or --force to load anyway."
            )

        out_dir = options["out"]
        scratch = None
        if out_dir is None and load:
            # The import keeps each file as a batch's raw file, so the scratch copy can go.
            scratch = tempfile.TemporaryDirectory(prefix="abaco-demo-")
            out_dir = Path(scratch.name)
        elif out_dir is None:
            demo_root = Path(settings.BASE_DIR) / ".data" / "demo"
            demo_root.mkdir(parents=True, exist_ok=True)
            out_dir = Path(tempfile.mkdtemp(prefix="tape-", dir=demo_root))
        self.stdout.write(
            f"Writing {loans:,} loans and {customers:,} customers "
            f"(seed {options['seed']}, as of {options['as_of']:%Y-%m-%d}) to {out_dir}"
        )
        paths = tape_generate(
            out_dir=out_dir,
            loans=loans,
            customers=customers,
            seed=options["seed"],
            as_of=options["as_of"],
            working_capital_share=options["working_capital_share"],
            progress=lambda done: self.stdout.write(f"  {done:,} loans written"),
            prefix=DEMO_PREFIX,
        )
        for path in paths.values():
            self.stdout.write(f"  {path}  {path.stat().st_size:,} bytes")
        if not load:
            self.stdout.write(self.style.SUCCESS("Tape written; nothing loaded (--no-load)."))
            return

        # Imported here so that writing files (--no-load) needs nothing but the generator.
        from loans.services import tape_import

        try:
            result = tape_import(path=out_dir, source=DEMO_SOURCE, by=None, job="demo_data")
        finally:
            if scratch is not None:
                scratch.cleanup()
        self.stdout.write(result.summary())
        # Segments as daily_ingest sets them after each sync, so the demo's segment slice has its
        # members from the start.
        from loans.models import Customer
        from loans.segments import customer_segments_refresh

        customer_segments_refresh(as_of=options["as_of"])
        # The load already set them at its data-through date: count the segmented, not the changed.
        segmented = Customer.objects.exclude(segment="").count()
        self.stdout.write(f"Customer segments at {options['as_of']:%Y-%m-%d}: {segmented:,} set.")
        self.stdout.write(self.style.SUCCESS("Demo tape loaded."))

        self.users_report(demo_users_ensure())

    def remove(self, *, dry_run: bool) -> None:
        from loans.services import demo_remove, snapshots_recompute_queue

        started = time.monotonic()
        removal = demo_remove(dry_run=dry_run)
        seconds = time.monotonic() - started
        if not removal.batches:
            self.stdout.write("No demo data in this book: nothing to remove.")
            return
        if dry_run:
            self.stdout.write(f"Would remove {removal.summary()} (dry run: nothing changed).")
            return
        self.stdout.write(f"Removed {removal.summary()} in {seconds:.1f} s.")
        if removal.customers_kept:
            self.stdout.write(
                f"{removal.customers_kept:,} customers first written by the demo tape hold real "
                "loans and were kept."
            )
        if removal.since is not None:
            queued = snapshots_recompute_queue(since=removal.since)
            self.stdout.write(
                f"Snapshots dated {removal.since:%Y-%m-%d} and later: recomputation {queued}."
            )
        self.stdout.write(self.style.SUCCESS("Demo data removed."))

    def users_report(self, passwords: dict[str, str | None]) -> None:
        """The new passwords, shown this once: they are stored only as hashes."""
        self.stdout.write("")
        self.stdout.write(f"{'user':<10} {'role':<14} password")
        for username, password in passwords.items():
            if DEMO_USERS[username] is Role.API_CLIENT:
                shown = f"none: a token (manage.py api_token create {username}, docs/api.md)"
            else:
                shown = password if password is not None else "(exists, unchanged)"
            self.stdout.write(f"{username:<10} {DEMO_USERS[username].value:<14} {shown}")
        if any(passwords.values()):
            self.stdout.write(self.style.WARNING("Passwords are shown only once; note them now."))
        staff = [u for u, role in DEMO_USERS.items() if role in STAFF_ROLES]
        self.stdout.write(
            f"{', '.join(staff)} sign in with a second factor: at the first sign-in the page shows "
            "a key and an otpauth:// link for an authenticator app (FreeOTP, Google "
            "Authenticator, 1Password, or `oathtool --totp -b KEY`), then ten recovery codes."
        )

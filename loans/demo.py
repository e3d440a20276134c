"""Synthetic Cascade loan tapes: the real tape's shape and mess, with none of its borrowers.

The anonymised export in ``shared/data`` may not enter the repository, yet the importer, the KPI
engine, the dashboards and the benchmarks all need a tape that looks like it: two lending
entities, repeat borrowers, bullet factoring and monthly working-capital loans, and loans that are
paid late, in parts, early, never, or written off, with the odd interest rebate. ``tape_generate``
writes such a tape in the Cascade format of docs/tape-import.md.

Two promises shape the code. Everything is drawn from one ``random.Random(seed)`` and nothing reads
the clock, so the same arguments give byte-identical files (tests and benchmarks can compare
them). Rows are streamed loan by loan to the four files, so a million loans need no more memory
than a thousand; money is kept in integer cents in the hot loop because ``Decimal`` would make a
million-loan tape several times slower, and cents give exact two-place strings all the same.
"""

from __future__ import annotations

import csv
import math
import random
from bisect import bisect_right
from calendar import monthrange
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path

TAPE_HEADERS: dict[str, list[str]] = {
    "customers": [
        "customer_id", "customer_type", "income", "currency", "gender", "birth_date",
        "channel_type", "dependents", "geography_city", "geography_state", "geography_country",
    ],
    "loans": [
        "loan_id", "maturity_date", "customer_id", "application_date", "disburse_date",
        "pledge_date", "product_type", "loan_grade", "lender", "facility", "total_fees",
        "total_other", "total_interest", "credit_bureau_score", "term", "frequency",
        "interest_rate", "disburse_principal", "outstanding_balance", "currency", "dpd",
        "ratio_paid", "loan_status", "amount_buckets", "company", "loan_counts", "term_buckets",
        "location_state_province",
    ],
    "schedules": [
        "loan_id", "date_due", "principal", "interest", "other", "fees", "to_tax", "add_balance",
        "reduce_balance", "currency",
    ],
    "transactions": [
        "loan_id", "transaction_type", "date_paid", "principal", "interest", "other", "fees",
        "to_tax", "add_balance", "reduce_balance", "currency",
    ],
}  # fmt: skip

# Demo data is its own source and its own lending entities: ``demo_data`` loads its tape as
# source "demo" with every id and entity starting "DEMO-", so it never shares a key or an entity
# slice with a real tape and ``demo_data --remove`` finds exactly its rows.
DEMO_SOURCE = "demo"
DEMO_PREFIX = "DEMO-"

FACTORING = "factoring"
WORKING_CAPITAL = "working_capital"
ENTITY_MAJOR_SHARE = 0.65  # ABF; the rest is ABT, as in the real tape.
WORKING_CAPITAL_SHARE = 0.25
MULTI_INVOICE_SHARE = 0.2  # factoring disbursements that finance 2-4 invoices at once
TAX_PERCENT = 13  # El Salvador's IVA on interest and fees
REBATE_SHARE = 0.03
WRITE_OFF_DAYS = 181
DEFAULT_DAYS = 180
NOT_PROVIDED = "Not Provided"

# Payment behaviours and their cumulative shares: on time 70%, late 15%, partial 5%, defaulted 6%,
# written off 2%, prepaid 2%.
ON_TIME, LATE, PARTIAL, DEFAULTED, WRITTEN_OFF, PREPAID = range(6)
BEHAVIOUR_CUTS = (0.70, 0.85, 0.90, 0.96, 0.98)

# (city, state, country, weight): mostly greater San Salvador, as the real book is.
GEOGRAPHY = [
    ("San Salvador", "San Salvador", "SLV", 40),
    ("Soyapango", "San Salvador", "SLV", 5),
    ("Mejicanos", "San Salvador", "SLV", 4),
    ("Apopa", "San Salvador", "SLV", 2),
    ("Ilopango", "San Salvador", "SLV", 2),
    ("Santa Tecla", "La Libertad", "SLV", 10),
    ("Antiguo Cuscatlán", "La Libertad", "SLV", 6),
    ("Colón", "La Libertad", "SLV", 2),
    ("Santa Ana", "Santa Ana", "SLV", 4),
    ("Sonsonate", "Sonsonate", "SLV", 3),
    ("San Miguel", "San Miguel", "SLV", 3),
    ("Cojutepeque", "Cuscatlán", "SLV", 2),
    ("Ahuachapán", "Ahuachapán", "SLV", 2),
    ("Usulután", "Usulután", "SLV", 1),
    ("Ciudad de Guatemala", "Guatemala", "GTM", 6),
    ("Mixco", "Guatemala", "GTM", 2),
    ("Quetzaltenango", "Quetzaltenango", "GTM", 2),
    ("Escuintla", "Escuintla", "GTM", 1),
    ("Antigua Guatemala", "Sacatepéquez", "GTM", 1),
    ("Tegucigalpa", "Francisco Morazán", "HND", 4),
    ("San Pedro Sula", "Cortés", "HND", 4),
    ("La Ceiba", "Atlántida", "HND", 1),
    ("Choluteca", "Choluteca", "HND", 1),
    ("Comayagua", "Comayagua", "HND", 1),
]

# Upper bounds in cents (inclusive) and in days, with the real tape's labels.
AMOUNT_BUCKETS = [
    (49_999, "0-0.5K"),
    (99_999, "0.5K-1K"),
    (249_999, "1K-2.5K"),
    (499_999, "2.5K-5K"),
    (999_999, "5K-10K"),
    (4_999_999, "10K-50K"),
    (10_000_000, "50K-100K"),
]
AMOUNT_TOP = ">100K"
TERM_BUCKETS = [
    (10, "0-10 Days"),
    (20, "11-20 Days"),
    (30, "21-30 Days"),
    (45, "31-45 Days"),
    (60, "46-60 Days"),
    (90, "61-90 Days"),
    (120, "91-120 Days"),
    (180, "121-180 Days"),
]
TERM_TOP = ">180 Days"

PRINCIPAL_MIN_CENTS = 200_00
PRINCIPAL_MAX_CENTS = 150_000_00
ZERO = "0.00"


def tape_generate(
    *,
    out_dir: Path,
    loans: int = 5000,
    customers: int = 300,
    seed: int = 7,
    as_of: date = date(2025, 11, 30),
    working_capital_share: float = WORKING_CAPITAL_SHARE,
    progress: Callable[[int], None] | None = None,
    prefix: str = "",
) -> dict[str, Path]:
    """Write customers, loans, schedules and transactions CSVs of a synthetic tape to ``out_dir``.

    Loans are disbursed over the three years up to ``as_of``; only cash dated on or before
    ``as_of`` is written, and the loans' as-of columns agree with it. ``working_capital_share``
    is the share of disbursements that are monthly instalment loans (3-12 instalments) rather
    than one-off factoring: it sets the book's density, about 5.3 schedule and cash rows per loan
    at the default 0.25 and about 10.4 at 0.7. ``progress`` (if given) is called with the number of
    loans written every 50,000 loans. ``prefix`` starts every customer id, lending entity and
    so loan id (``DEMO-`` for ``demo_data``: demo rows never share a key or an entity with a
    real tape, whose ids look alike).
    """
    if loans < 0:
        raise ValueError("loans must be zero or more")
    if customers < 1:
        raise ValueError("customers must be at least one")
    if not 0 <= working_capital_share <= 1:
        raise ValueError("working_capital_share must lie between 0 and 1")
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.csv" for name in TAPE_HEADERS}
    with ExitStack() as stack:
        writers = {}
        for name, path in paths.items():
            handle = stack.enter_context(
                path.open("w", newline="", encoding="utf-8", buffering=1 << 20)
            )
            writers[name] = csv.writer(handle, lineterminator="\n")
            writers[name].writerow(TAPE_HEADERS[name])
        borrowers = _customers_write(writers["customers"], rng=rng, count=customers, prefix=prefix)
        _loans_write(
            writers,
            rng=rng,
            borrowers=borrowers,
            count=loans,
            as_of=as_of,
            working_capital_share=working_capital_share,
            progress=progress,
            entities=(f"{prefix}ABF", f"{prefix}ABT"),
        )
    return paths


class _Borrowers:
    """The customers loans are drawn from: ids, home state, draw weights, loans taken so far."""

    def __init__(self, ids: list[str], states: list[str], weights: list[float]) -> None:
        self.ids = ids
        self.states = states
        self.cumulative = list(accumulate(weights))
        self.loans_taken = [0] * len(ids)


def _customers_write(writer, *, rng: random.Random, count: int, prefix: str) -> _Borrowers:
    places = [(city, state, country) for city, state, country, _ in GEOGRAPHY]
    place_weights = list(accumulate(weight for *_, weight in GEOGRAPHY))
    ids, states, weights = [], [], []
    for n in range(1, count + 1):
        customer_id = f"{prefix}CLI{n:06d}"
        city, state, country = rng.choices(places, cum_weights=place_weights)[0]
        # Pareto weights make a few customers borrow again and again, as factoring clients do.
        weights.append(min(rng.paretovariate(1.3), 25.0))
        ids.append(customer_id)
        states.append(state)
        writer.writerow([customer_id, "", "0.0", "USD", "", "", "", "0", city, state, country])
    return _Borrowers(ids, states, weights)


def _month_add(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    month += 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def _money(cents: int) -> str:
    # Exact for any amount below 10^13 cents: the float is within far less than half a cent.
    return f"{cents / 100:.2f}"


def _randint_fast(rng: random.Random) -> Callable[[int, int], int]:
    """``rng.randint`` without its argument checks: pure-Python randint is slow for a few draws per loan."""
    random_ = rng.random

    def randint(low: int, high: int) -> int:
        return low + int(random_() * (high - low + 1))

    return randint


def _tax(cents: int) -> int:
    """13% of an amount in cents, rounded half up (half away from zero for rebates)."""
    if cents < 0:
        return -((-cents * TAX_PERCENT + 50) // 100)
    return (cents * TAX_PERCENT + 50) // 100


def _cash_row(
    loan_id: str,
    kind: str,
    day: str,
    principal: int,
    interest: int = 0,
    fees: int = 0,
    tax: int = 0,
) -> list[str]:
    return [
        loan_id, kind, day, _money(principal), _money(interest), ZERO, _money(fees), _money(tax),
        ZERO, ZERO, "USD",
    ]  # fmt: skip


def _bucket(value: int, buckets: list[tuple[int, str]], top: str) -> str:
    for bound, label in buckets:
        if value <= bound:
            return label
    return top


def _loans_write(
    writers: dict,
    *,
    rng: random.Random,
    borrowers: _Borrowers,
    count: int,
    as_of: date,
    working_capital_share: float,
    progress: Callable[[int], None] | None,
    entities: tuple[str, str],
) -> None:
    loan_rows = writers["loans"].writerow
    schedule_rows = writers["schedules"].writerows
    cash_rows = writers["transactions"].writerows

    start = _month_add(as_of, -36)
    start_ord, as_of_ord = start.toordinal(), as_of.toordinal()
    span = as_of_ord - start_ord
    # Every date written lies between the first disbursement and a year and a bit after as_of:
    # format each once.
    iso = [(start + timedelta(days=n)).isoformat() for n in range(span + 500)]
    monthly_dues = []
    for offset in range(span + 1):
        day = start + timedelta(days=offset)
        monthly_dues.append([_month_add(day, k).toordinal() for k in range(1, 13)])

    random_ = rng.random
    randint = _randint_fast(rng)
    customer_ids = borrowers.ids
    customer_states = borrowers.states
    cumulative = borrowers.cumulative
    loans_taken = borrowers.loans_taken
    customer_count = len(customer_ids)
    next_new = 0
    major, minor = entities
    disbursement_no = {major: 0, minor: 0}
    group_left = 0
    invoice = 0
    company = product = ""
    customer = disburse_ord = 0
    mu_factoring, mu_capital = math.log(900.0), math.log(6000.0)

    for i in range(count):
        if group_left == 0:
            # A new disbursement. Dates rise with i and thin out towards the start, so volume
            # grows over the three years; customers join in proportion to loans written.
            t = (i + random_()) / count
            disburse_ord = start_ord + 1 + int(span * t**0.75)
            company = major if random_() < ENTITY_MAJOR_SHARE else minor
            disbursement_no[company] += 1
            active = min(customer_count, i * customer_count // count + 1)
            if next_new < active:
                customer = next_new
                next_new += 1
            else:
                customer = bisect_right(
                    cumulative, random_() * cumulative[active - 1], 0, active - 1
                )
            if random_() < working_capital_share:
                product, group_left = WORKING_CAPITAL, 1
            else:
                product = FACTORING
                group_left = randint(2, 4) if random_() < MULTI_INVOICE_SHARE else 1
            invoice = 0
        group_left -= 1
        invoice += 1
        loans_taken[customer] += 1
        loan_id = f"{company} - DSB{disbursement_no[company]:07d}-{invoice:03d}"

        # Terms and the expected schedule, in cents.
        if product == FACTORING:
            principal = int(rng.lognormvariate(mu_factoring, 1.25) * 100)
        else:
            principal = int(rng.lognormvariate(mu_capital, 1.0) * 100)
        if principal < PRINCIPAL_MIN_CENTS:
            principal = PRINCIPAL_MIN_CENTS + randint(0, 30_000)
        elif principal > PRINCIPAL_MAX_CENTS:
            principal = PRINCIPAL_MAX_CENTS - randint(0, 2_000_000)
        if random_() < 0.3:  # invoices and credit lines are often round sums
            principal = max(PRINCIPAL_MIN_CENTS, principal // 10_000 * 10_000)

        if product == FACTORING:
            term = int(rng.triangular(7, 121, 35))
            rate_milli = randint(200, 800)
            dues = [disburse_ord + term]
            prins = [principal]
            ints = [(principal * rate_milli * term + 182_500) // 365_000]
            fees = [principal * randint(4, 20) // 1000]
            frequency = "One-time"
        else:
            n = randint(3, 12)
            rate_milli = randint(180, 450)
            dues = monthly_dues[disburse_ord - start_ord][:n]
            base = principal // n
            prins = [base] * (n - 1) + [principal - base * (n - 1)]
            ints = []
            balance = principal
            for part in prins:
                ints.append((balance * rate_milli + 6000) // 12_000)
                balance -= part
            fee_total = principal * randint(10, 30) // 1000
            fees = [fee_total // n] * (n - 1) + [fee_total - fee_total // n * (n - 1)]
            frequency = "Monthly"
            term = dues[-1] - disburse_ord
        taxes = [_tax(a + b) for a, b in zip(ints, fees, strict=True)]

        payments, write_off = _cash_flows(random_, randint, disburse_ord, dues, prins, ints, fees)

        # Cash up to as_of, and the tape's as-of view of the loan.
        cash = [_cash_row(loan_id, "DISBURSEMENT", iso[disburse_ord - start_ord], principal)]
        paid = 0
        for day, p, interest, fee in payments:
            if day > as_of_ord:
                break
            paid += p
            if interest > 0 and random_() < REBATE_SHARE:
                # A rebate: interest handed back, with the tax on it, instead of charged.
                interest, fee = -max(1, interest * randint(10, 60) // 100), 0
            cash.append(
                _cash_row(
                    loan_id, "PAYMENT", iso[day - start_ord], p, interest, fee, _tax(interest + fee)
                )
            )
        written_off = write_off is not None and write_off[0] <= as_of_ord
        if written_off:
            cash.append(
                _cash_row(loan_id, "WRITE_OFF", iso[write_off[0] - start_ord], write_off[1])
            )

        dpd = 0
        left = paid
        for due, part in zip(dues, prins, strict=True):
            if left >= part:
                left -= part
                continue
            if due < as_of_ord:
                dpd = as_of_ord - due
            break
        outstanding = principal - paid
        if outstanding == 0:
            status = "Complete"
        elif written_off or dpd > DEFAULT_DAYS:
            status = "Default"
        else:
            status = "Current"
        ratio = (paid * 20_000 + principal) // (2 * principal)  # paid/principal, 4 places
        location = customer_states[customer] if random_() >= 0.01 else NOT_PROVIDED

        loan_rows(
            [
                loan_id,
                iso[dues[-1] - start_ord],
                customer_ids[customer],
                "",
                iso[disburse_ord - start_ord],
                "",
                product,
                "",
                "",
                "",
                _money(sum(fees)),
                ZERO,
                _money(sum(ints)),
                "",
                term,
                frequency,
                f"{rate_milli // 1000}.{rate_milli % 1000:03d}",
                _money(principal),
                _money(outstanding),
                "USD",
                dpd,
                f"{ratio // 10_000}.{ratio % 10_000:04d}",
                status,
                _bucket(principal, AMOUNT_BUCKETS, AMOUNT_TOP),
                company,
                loans_taken[customer],
                _bucket(term, TERM_BUCKETS, TERM_TOP),
                location,
            ]
        )
        schedule_rows(
            [
                loan_id,
                iso[due - start_ord],
                _money(p),
                _money(interest),
                ZERO,
                _money(fee),
                _money(tax),
                ZERO,
                ZERO,
                "USD",
            ]
            for due, p, interest, fee, tax in zip(dues, prins, ints, fees, taxes, strict=True)
        )
        cash_rows(cash)
        if progress is not None and (i + 1) % 50_000 == 0:
            progress(i + 1)


def _cash_flows(
    random_: Callable[[], float],
    randint: Callable[[int, int], int],
    disburse_ord: int,
    dues: list[int],
    prins: list[int],
    ints: list[int],
    fees: list[int],
) -> tuple[list[tuple[int, int, int, int]], tuple[int, int] | None]:
    """The loan's payments as (date ordinal, principal, interest, fees) in date order, and its
    write-off as (date ordinal, principal) if it gets one. Dates may pass as_of; the caller cuts."""
    n = len(dues)
    behaviour = bisect_right(BEHAVIOUR_CUTS, random_())
    payments: list[tuple[int, int, int, int]] = []
    last = disburse_ord

    if behaviour == ON_TIME:
        for k in range(n):
            day = dues[k] - randint(1, 5) if random_() < 0.25 else dues[k]
            last = max(day, last)
            payments.append((last, prins[k], ints[k], fees[k]))
        return payments, None

    if behaviour == LATE:
        for k in range(n):
            last = max(dues[k] + randint(5, 60), last)
            payments.append((last, prins[k], ints[k], fees[k]))
        return payments, None

    if behaviour == PARTIAL:
        for k in range(n):
            p, interest, fee = prins[k], ints[k], fees[k]
            last = max(dues[k] - randint(0, 5), last)
            for _ in range(randint(2, 3) - 1):
                share = randint(25, 60)
                part = (p * share // 100, interest * share // 100, fee * share // 100)
                payments.append((last, *part))
                p, interest, fee = p - part[0], interest - part[1], fee - part[2]
                last += randint(3, 20)
            payments.append((last, p, interest, fee))
        return payments, None

    if behaviour == PREPAID:
        if n == 1:
            term = dues[0] - disburse_ord
            elapsed = randint(max(1, term // 5), max(1, term * 2 // 3))
            # Interest only for the days the money was out.
            payments.append((disburse_ord + elapsed, prins[0], ints[0] * elapsed // term, fees[0]))
            return payments, None
        stop = randint(0, n - 2)
        for k in range(stop):
            last = max(dues[k], last)
            payments.append((last, prins[k], ints[k], fees[k]))
        last = max(dues[stop] - randint(5, 25), last, disburse_ord + 1)
        payments.append((last, sum(prins[stop:]), ints[stop], fees[stop]))
        return payments, None

    # Defaulted or written off: pays some installments, maybe part of the next, then stops.
    stop = randint(0, n - 1)
    for k in range(stop):
        last = max(dues[k], last)
        payments.append((last, prins[k], ints[k], fees[k]))
    if random_() < 0.5:
        share = randint(10, 60)
        last = max(dues[stop] + randint(-3, 30), last)
        payments.append((last, prins[stop] * share // 100, ints[stop] * share // 100, 0))
    if behaviour == DEFAULTED:
        return payments, None
    remaining = sum(prins) - sum(p for _, p, _, _ in payments)
    return payments, (dues[stop] + randint(WRITE_OFF_DAYS, WRITE_OFF_DAYS + 60), remaining)

"""The other files staff load besides the tape: financial statements and marketing spend.

Both are small, both are keyed by what the file says (an entity's line at a period end, a
channel's spend in a month) and both point at the batch that last wrote each row.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from loans.models.book import CURRENCY_CODE, MONEY, Batch


class FinancialStatementLine(models.Model):
    """One line of a lending entity's balance sheet or profit and loss at a period end."""

    class Statement(models.TextChoices):
        BALANCE_SHEET = "balance_sheet", "Balance sheet"
        PROFIT_AND_LOSS = "profit_and_loss", "Profit and loss"

    company = models.CharField(max_length=32, help_text="The lending entity.")
    period_end = models.DateField(help_text="The last day of the period the statement covers.")
    statement = models.CharField(max_length=16, choices=Statement.choices)
    line_item = models.CharField(
        max_length=128, help_text='As the statement names it: "Cash", "Interest income".'
    )
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="USD")

    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "financial statement line"
        ordering = ["company", "-period_end", "statement", "line_item"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "period_end", "statement", "line_item"],
                name="statement_line_natural_key",
            ),
            models.CheckConstraint(condition=CURRENCY_CODE, name="statement_line_currency_iso"),
        ]
        indexes = [
            # Both entities' statements at one period end: reconciling the book to the balance sheet.
            models.Index(fields=["period_end", "statement"], name="statement_line_period_idx"),
        ]
        # The natural-key index (company, period_end, ...) serves one entity's statement history.

    def __str__(self) -> str:
        return f"{self.company} {self.period_end:%Y-%m-%d} {self.statement}: {self.line_item}"


class MarketingSpend(models.Model):
    """What was spent on one channel (and segment) in one calendar month."""

    month = models.DateField(help_text="The first day of the month.")
    channel = models.CharField(max_length=64, help_text="meta, google, radio, ...")
    segment = models.CharField(max_length=64, blank=True)
    spend = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="USD")

    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "marketing spend"
        verbose_name_plural = "marketing spend"
        ordering = ["-month", "channel", "segment"]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "channel", "segment"], name="marketing_spend_natural_key"
            ),
            models.CheckConstraint(condition=Q(spend__gte=0), name="marketing_spend_non_negative"),
            models.CheckConstraint(condition=Q(month__day=1), name="marketing_spend_month_start"),
            models.CheckConstraint(condition=CURRENCY_CODE, name="marketing_spend_currency_iso"),
        ]
        # The natural-key index (month, channel, segment) leads with month, so it also serves
        # "spend in a period" (CAC); a separate month index would only duplicate it.

    def __str__(self) -> str:
        segment = f" · {self.segment}" if self.segment else ""
        return f"{self.month:%Y-%m} {self.channel}{segment}"

"""Reads of KPI snapshots for the dashboards: one module per page, a fixed number of indexed
queries each, never a recomputation (docs/design.md, "Where data lives"; numbers come from kpis.engine runs).

Every page reads the same selection (as-of date, basis, portfolio slice) through
``common.selection_read``; values reach templates already formatted, and every table also comes
out as plain rows for the CSV/XLSX exports (``tables``).
"""

from kpis.selectors.collection import Collections, collections_read
from kpis.selectors.common import Selection, change_display, display, selection_read
from kpis.selectors.concentration import Concentration, concentration_read
from kpis.selectors.customer import CustomerHistory, customer_read
from kpis.selectors.drilldown import Drilldown, drilldown_read
from kpis.selectors.insights import insight_latest, insight_latest_id, insights_history
from kpis.selectors.loan import LoanHistory, loan_read
from kpis.selectors.overview import Overview, overview_read
from kpis.selectors.risk import Risk, risk_read

__all__ = [
    "Collections",
    "Concentration",
    "CustomerHistory",
    "Drilldown",
    "LoanHistory",
    "Overview",
    "Risk",
    "Selection",
    "change_display",
    "collections_read",
    "concentration_read",
    "customer_read",
    "display",
    "drilldown_read",
    "insight_latest",
    "insight_latest_id",
    "insights_history",
    "loan_read",
    "overview_read",
    "risk_read",
    "selection_read",
]

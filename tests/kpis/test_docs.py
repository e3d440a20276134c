"""docs/kpis.md is generated from the definitions: the two never drift apart."""

from kpis import definitions
from kpis.docs import PATH, kpi_docs_render


def test_the_kpi_page_is_exactly_what_the_definitions_generate():
    assert PATH.read_text() == kpi_docs_render(), "docs/kpis.md is stale: run `manage.py kpi_docs`"


def test_the_kpi_page_shows_every_kpi_with_its_formula_and_version():
    page = PATH.read_text()
    for kpi in definitions.KPIS:
        assert f"### `{kpi.code}` — {kpi.name} (v{kpi.version}, {kpi.unit})" in page
        assert kpi.formula in page

"""AI insights: what changed in a slice of the portfolio, written from stored snapshots only and
checked against them before anyone reads it (issue 23, docs/insights.md).

- ``digest``: the compact, structured input built from stored KPI values, roll rates and vintages
  (never customer or loan rows, never a restricted or personal field), with the data status
  (provisional, data-through, beyond data) and the rates that are "n/m";
- ``prompt``: the instructions and the JSON schema of the answer, versioned and hashed;
- ``verify``: every cited value against the digest (exact for counts, to the displayed precision
  for money and rates) and every claimed direction, by field or by the text's words, against the
  numbers; rendering of published text from the stored values, never the model's digits;
- ``summary``: the deterministic summary from the same digest (model off, failing or unverifiable);
- ``services``: generate, verify, regenerate a bounded number of times, store an ``Insight`` and
  journal it (``compliance.journal``).

The model is reached through ``integrations.openai`` by a dotted path (``WRITER``): kpis and
integrations never import each other (the layers contract in pyproject.toml).
"""

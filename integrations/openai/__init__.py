"""OpenAI: structured answers for the AI insights (kpis.insights), through the official SDK."""

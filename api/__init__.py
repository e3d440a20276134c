"""What every endpoint of ``/api/v1/`` shares: tokens and their scopes, authentication, the
base views (role and scope checks, cursor pagination, CSV streaming, problem+json errors, per-token
throttling, request size limits, the access-log hook) and the OpenAPI schema's conventions.

The endpoints themselves live next to the data they read: ``loans/api.py``, ``kpis/api.py``,
``integrations/api.py``, ``compliance/api.py``.
"""

"""Fake providers that answer the way their documented APIs do.

Each fake is a callable ``(httpx.Request) -> httpx.Response`` holding its own state (records,
rate-limit counters, injected failures). Unit tests put it behind the real client with
``httpx.MockTransport(fake)``; end-to-end runs and benchmarks serve it on a local port with
``fakes.server.serve(fake)`` and point the client's base URL there.
"""

"""The admin HTTP API (Litestar on uvicorn): master data, card lifecycle, approvals, reports.

Issue 5 builds it. It may import only `protocols` (to reach the switch as a privileged terminal)
and `migrations` (the shared schema); money never moves here except through the switch.
"""

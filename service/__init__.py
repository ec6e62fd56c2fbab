"""The reference service: a small Tuist-server stand-in (runs, binary cache, previews, accounts) instrumented
with ``telemetry``. ``python -m service`` runs it; ``make run`` does the same. The ``telemetry`` package never
imports this one."""

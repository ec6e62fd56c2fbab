"""Instrumentation glue: runtime metrics here; httpx, SQLAlchemy and ASGI behind their extras."""

"""Celery adapter: the app, one task that runs a job row, and the sender the library submits through."""

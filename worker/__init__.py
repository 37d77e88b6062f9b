"""Celery worker: launches and follows AWX jobs. worker/awx_client.py is the only code that talks to AWX."""

"""Celery workers: the app factory and the tasks that follow a commit."""

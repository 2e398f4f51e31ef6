"""gunicorn reads this file from the directory it starts in (or `-c gunicorn.conf.py`): its
hooks make a worker's SIGTERM hand queued runs back instead of starting or cutting them."""

from portal.gunicorn_hooks import post_worker_init, worker_exit, worker_int

__all__ = ["post_worker_init", "worker_exit", "worker_int"]

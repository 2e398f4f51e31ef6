"""Database plumbing: a client-side deadline on every statement (deadline.py, watchdog.py) and
the PostgreSQL backend that enforces it (postgresql/)."""

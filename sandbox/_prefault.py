"""Imported (and forgotten) by each idle spare child, to exercise the import machinery
before a call arrives. Intentionally empty."""

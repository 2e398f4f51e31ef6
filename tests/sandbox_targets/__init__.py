"""Plugins that tests/sandbox/ run inside the sandbox (imported only in children)."""

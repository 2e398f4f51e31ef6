"""Plugins that tests/test_sandbox*.py run inside the sandbox (imported only in children)."""

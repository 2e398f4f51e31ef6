"""Plugin functions for benchmarks/sandbox_bench.py (imported only in sandbox children).

Kept free of imports so a call measures the sandbox, not the plugin's import time.
"""


def trivial(a: int = 1, b: int = 2) -> int:
    return a + b


def json_like(n_items: int) -> list[dict[str, object]]:
    """About 50 bytes per item when pickled: 20_000 items ~ 1 MB."""
    return [
        {"id": i, "name": f"item-{i:06d}", "tags": ["alpha", "beta"], "score": i / 7, "ok": True}
        for i in range(n_items)
    ]


def warm_import(module_name: str) -> None:
    """A Preload warm-up: import the plugin's heavy module once, in the warm host."""
    import importlib  # the point is that this import happens in the warm host

    importlib.import_module(module_name)  # audit: allow PORTAL001 runs only in a sandbox host

"""Plugin functions for ``python -m sandbox.bench`` (imported only in sandbox children).

Kept free of imports so a call measures the sandbox, not the plugin's import time.
"""

_WARM_STATE: dict[str, object] = {}


def trivial(a: int = 1, b: int = 2) -> int:
    return a + b


def json_like(n_items: int) -> list[dict[str, object]]:
    """About 100 bytes per item when pickled: 10_000 items ~ 1 MB."""
    return [
        {"id": i, "name": f"item-{i:06d}", "tags": ["alpha", "beta"], "score": i / 7, "ok": True}
        for i in range(n_items)
    ]


def warm(import_seconds: float) -> None:
    """A Preload warm-up standing in for `import torch`: slow once, cached afterwards."""
    import time

    time.sleep(import_seconds)
    _WARM_STATE["model"] = "loaded"


def use_warm_state() -> object:
    return _WARM_STATE.get("model", "cold")

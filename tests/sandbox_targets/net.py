"""Plugins that probe the isolation around them."""

import socket


def try_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"

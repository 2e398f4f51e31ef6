"""Greets someone: the smallest healthy plugin, with a setup() step."""

version = "1.0"

_greeting = None


def setup():
    # Runs once per plugin host, before any run: load models, open clients, read config here.
    global _greeting
    _greeting = "Hello"


def run(name="world"):
    return {"greeting": f"{_greeting}, {name}!"}

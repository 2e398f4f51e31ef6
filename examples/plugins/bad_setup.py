"""Needs a license server at start-up; setup() fails because it cannot reach it."""

version = "1.0"


def setup():
    raise ConnectionRefusedError(
        "license server license.example.internal:27000 refused the connection"
    )


def run():
    return {"licensed": True}

"""A plugin with a syntax error: it can never import, so it is FAILED with the line."""

version = "1.0"


def run(:
    return {}

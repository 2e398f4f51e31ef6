"""A plugin module that the portal process must never import when named by string."""


def value():
    return "imported in the child"

"""Reads memory at address 0 through ctypes: the process dies with SIGSEGV."""

import ctypes

version = "1.0"
limits = {"timeout_s": 5}


def run():
    # strlen() of a NULL pointer, in C: a real segmentation fault, not a Python exception.
    return ctypes.string_at(0)

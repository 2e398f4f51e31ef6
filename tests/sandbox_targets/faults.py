"""Targets whose exceptions declare what they mean (``sandbox_fault``, ``sandbox_detail``),
and failures whose frames the sandbox must report."""

import json


class Declared(Exception):
    """An exception that says which kind of failure it is, with data about it."""

    sandbox_fault = "unavailable"

    def __init__(self, message, detail):
        super().__init__(message)
        self.sandbox_detail = detail


class ParamsDidNotFit(TypeError):
    sandbox_fault = "params"


class WrongKind(Exception):
    sandbox_fault = 42  # not a kind's name: ignored


class Chameleon(Exception):
    """Answers every attribute it lacks, as mocks do: it declares nothing."""

    def __getattr__(self, name):
        return "params"


def raise_declared(detail):
    raise Declared("the call's process lacks something", detail)


def raise_params():
    raise ParamsDidNotFit("run() takes no 'x'")


def raise_wrong_kind():
    raise WrongKind("oops")


def raise_chameleon():
    raise Chameleon("who am I")


def raise_unencodable_detail():
    raise Declared("set inside", {"items": {1, 2}})


def raise_huge_detail():
    raise Declared("too much", "x" * 2_000_000)


def parse_broken():
    return json.loads("{")  # the last frame of this file before the json module's


def recurse():
    return recurse()  # every frame of the recursion is this line


def warm_fails_to_load():
    raise Declared("cannot load", {"missing": ["weights"]})

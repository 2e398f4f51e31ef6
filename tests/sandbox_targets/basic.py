"""Well-behaved and ordinarily-failing plugin functions."""

import os
import sys
import tempfile


def echo(*args, **kwargs):
    return {"args": args, "kwargs": kwargs}


def add(a, b):
    return a + b


def divide(a, b):
    return a / b  # the line the error location must point at


def raise_system_exit(code):
    raise SystemExit(code)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def hard_exit(code):
    sys.stdout.write("about to exit\n")
    sys.stdout.flush()
    os._exit(code)


def chatty(out, err):
    print(out)
    print(err, file=sys.stderr)
    return "done"


def environment():
    return dict(os.environ)


def working_directory():
    with open("scratch.txt", "w") as handle:  # relative: lands in the per-call directory
        handle.write("x")
    return {"cwd": os.getcwd(), "tempdir": tempfile.gettempdir()}


def process_info():
    return {"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid()}


def own_priority():
    return os.getpriority(os.PRIO_PROCESS, 0)


def unpicklable():
    return lambda: None


def big_value(n_bytes):
    return "x" * n_bytes


class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def greet(self, name):
        return f"{self.greeting}, {name}"

    @classmethod
    def shout(cls, name):
        return name.upper()


class Opaque:
    """A class the portal is not allowed to unpickle (not in result_globals)."""

    def __init__(self, x):
        self.x = x


def return_opaque():
    return Opaque(1)


not_callable = 42


class Version(str):
    """A str subclass, as torch.__version__ is (torch.torch_version.TorchVersion)."""


class Count(int):
    pass


def return_subclasses():
    import collections

    point = collections.namedtuple("Point", "x y")
    return {
        "version": Version("2.13.0"),
        "count": Count(3),
        "point": point(1, 2),
        "raw": type("Blob", (bytes,), {})(b"ab"),
        "nested": [{"v": Version("x")}],
    }

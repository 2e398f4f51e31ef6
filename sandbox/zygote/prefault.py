"""Imported (and forgotten) by each idle spare child: it rehearses a call to this module's
function, to take the memory faults of the import machinery and of pickling before a real
call arrives. Imports nothing."""


def rehearse(*args: object, **kwargs: object) -> tuple[object, ...]:
    return (args, kwargs)

"""Multiplies two random square matrices with torch: a real heavy plugin.

It runs with the interpreter of the named environment `torch` (PORTAL_PLUGIN_ENVIRONMENTS,
e.g. torch=/srv/portal/var/envs/torch/bin/python, made by `make torch-env`), so the portal's
own venv never needs torch.
"""

import torch

python = "torch"
version = "1.0"
requires = {"modules": ["torch"]}
limits = {"timeout_s": 60}


def setup():
    torch.set_num_threads(1)  # one call per core: the sandbox runs calls side by side


def run(size=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(size, size, generator=generator)
    b = torch.rand(size, size, generator=generator)
    product = a @ b
    return {
        "torch": torch.__version__,  # a str subclass (TorchVersion): arrives as a plain str
        "size": size,
        "trace": float(product.trace()),
        "corner": product[0, 0].item(),
    }

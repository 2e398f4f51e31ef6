"""What a plugin's ``requires`` asks of the process it runs in (modules, environment
variables, files, a GPU), checked there: each missing item, as the load report lists it.

Runs only in sandbox processes; standard library only (torch is imported only when
installed, to ask it about the GPU).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from plugin_contract import REQUIRE_KEYS, MissingItem, MissingKind


def check_requirements(
    requires: Mapping[str, Any], *, base_dir: str | None, kinds: tuple[str, ...] = REQUIRE_KEYS
) -> list[MissingItem]:
    """Every missing item of a `requires` declaration, in the order modules, env, files, gpu
    (only those of `kinds`)."""
    wanted = {key: requires.get(key, []) if key in kinds else [] for key in REQUIRE_KEYS}
    missing = [missing_item("module", m) for m in wanted["modules"] if not _importable(m)]
    missing += [missing_item("env", var) for var in wanted["env"] if not os.environ.get(var)]
    for declared_path in wanted["files"]:
        problem = _file_problem(declared_path, base_dir)
        if problem:
            missing.append(problem)
    if wanted["gpu"]:
        found, checked = gpu_check()
        if not found:
            missing.append(missing_item("gpu", "CUDA GPU", checked=checked))
    return missing


def missing_item(
    kind: MissingKind,
    item: str,
    *,
    path: str | None = None,
    problem: str | None = None,
    checked: str | None = None,
) -> MissingItem:
    """One missing item; the details a kind has, and only those, beside its kind and name."""
    found: MissingItem = {"kind": kind, "item": item}
    if problem is not None:
        found["problem"] = problem
    if path is not None:
        found["path"] = path
    if checked is not None:
        found["checked"] = checked
    return found


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def _file_problem(declared: str, base_dir: str | None) -> MissingItem | None:
    path = os.path.expanduser(os.path.expandvars(declared))
    if "$" in path:
        return missing_item("file", declared, problem="unset_variable", path=path)
    if not os.path.isabs(path) and base_dir:
        path = os.path.join(base_dir, path)  # relative paths sit next to the plugin
    path = os.path.normpath(path)
    if not os.path.exists(path):
        return missing_item("file", declared, problem="not_found", path=path)
    if os.path.isdir(path):
        if os.listdir(path):
            return None
        return missing_item("file", declared, problem="empty", path=path)
    if not os.access(path, os.R_OK):
        return missing_item("file", declared, problem="unreadable", path=path)
    if os.path.getsize(path) == 0:
        return missing_item("file", declared, problem="empty", path=path)
    return None


def gpu_check() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable, and what was checked, in words for the reason.

    When torch is installed its answer decides (a CPU-only torch cannot use the GPU anyway);
    otherwise a GPU listed by nvidia-smi, or an NVIDIA device node, counts.
    """
    checked: list[str] = []
    torch_says: bool | None = None
    if _importable("torch"):
        try:
            import torch  # the plugin host may import heavy libraries; the portal never does

            torch_says = bool(torch.cuda.is_available())
            checked.append(f"torch.cuda.is_available() is {torch_says}")
        except Exception as exc:  # a broken torch is a finding, not a crash
            checked.append(f"importing torch failed ({type(exc).__name__}: {exc})")
    smi_says = _nvidia_smi(checked)
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if smi_says is None:
        checked.append(f"{devices[0]} exists" if devices else "no /dev/nvidia* device exists")
    found = torch_says if torch_says is not None else bool(smi_says or devices)
    return found, " and ".join(checked)


def _nvidia_smi(checked: list[str]) -> bool | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        checked.append("nvidia-smi is absent")
        return None
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        checked.append(f"nvidia-smi -L failed ({type(exc).__name__})")
        return False
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    if listing.returncode != 0 or not gpus:
        checked.append(f"nvidia-smi -L lists no GPU (exit code {listing.returncode})")
        return False
    checked.append(f"nvidia-smi -L lists {len(gpus)} GPU(s)")
    return True

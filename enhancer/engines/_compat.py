"""Import shims so basicsr 1.4.2 (and gfpgan/realesrgan/facexlib on top of it) loads on today's stack.

- basicsr imports ``torchvision.transforms.functional_tensor.rgb_to_grayscale``; that private module was
  removed from torchvision ≥ 0.17.
- basicsr does ``from distutils.version import LooseVersion``; Python ≥ 3.12 has no distutils. setuptools
  supplies it when present; otherwise a minimal ``LooseVersion`` (all basicsr compares) stands in.

Import this module (or call :func:`install`) before any of those libraries.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import types

_SHIM = "torchvision.transforms.functional_tensor"


def install() -> None:
    _install_distutils()
    _install_functional_tensor()


def _install_distutils() -> None:
    if sys.version_info < (3, 12):  # still in the standard library
        return
    for pre in ((), ("setuptools",)):  # setuptools, once imported, supplies its own distutils
        with contextlib.suppress(ImportError):
            for name in (*pre, "distutils.version"):
                importlib.import_module(name)
            return

    class LooseVersion:
        def __init__(self, v: str) -> None:
            self.v = tuple(int(x) if x.isdigit() else x for x in re.findall(r"\d+|[a-z]+", str(v)))

        def __ge__(self, o: LooseVersion) -> bool:
            return self.v >= o.v

        def __lt__(self, o: LooseVersion) -> bool:
            return self.v < o.v

    mod, ver = types.ModuleType("distutils"), types.ModuleType("distutils.version")
    ver.LooseVersion = LooseVersion  # type: ignore[attr-defined]
    mod.version = ver  # type: ignore[attr-defined]
    sys.modules.update({"distutils": mod, "distutils.version": ver})


def _install_functional_tensor() -> None:
    """Register the removed torchvision module name, pointing at the public ``rgb_to_grayscale``."""
    if _SHIM in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
        return
    except ImportError:
        pass
    from torchvision.transforms.functional import rgb_to_grayscale

    shim = types.ModuleType(_SHIM)
    shim.rgb_to_grayscale = rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules[_SHIM] = shim


install()

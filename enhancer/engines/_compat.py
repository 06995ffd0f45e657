"""Import shim so basicsr 1.4.2 (and gfpgan/realesrgan/facexlib on top of it) loads on torchvision ≥ 0.17.

basicsr imports ``torchvision.transforms.functional_tensor.rgb_to_grayscale``; that private module was
removed from torchvision. Import this module (or call :func:`install`) before any of those libraries.
"""

from __future__ import annotations

import sys
import types

_SHIM = "torchvision.transforms.functional_tensor"


def install() -> None:
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

"""The capability vocabulary: what a job needs and what a worker can do, in words every service shares.

Engines live in the enhancer (``enhancer/engines/registry.py``) and each declares which of these capabilities
it provides; a worker advertises the capabilities of the engines it can run in its presence, and pulls jobs
only from the consumers of those capabilities (one job subject and one consumer per capability,
``bus/subjects.py``). The edge routes each job by the capability it needs (:func:`needed`), so a job that
needs faces restored only ever reaches a worker that can restore them. The edge never needs to know an
engine's name: these words are the whole contract between the two.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schemas import EnhanceOptions

#: Super-resolution, ×2 or ×4. Every engine upscales, so every worker has it.
UPSCALE = "upscale"
#: Face restoration (on top of the upscale of the rest of the photo).
FACES = "faces"

#: Every capability, the scarcer first: a worker that has several takes a job that only workers like it
#: can do before one that any worker can.
CAPABILITIES: tuple[str, ...] = (FACES, UPSCALE)

#: The capability every worker has: a job that needs only this one is served whoever is on the bus.
BASE = UPSCALE

#: How a capability is named in a sentence shown to a person.
DESCRIPTIONS: dict[str, str] = {UPSCALE: "super-resolution (×2/×4)", FACES: "face restoration"}


def needed(options: EnhanceOptions, offered: Collection[str]) -> str:
    """The capability a job with ``options`` is routed by, given what the fleet ``offered`` at that moment.

    ``face_enhance`` true needs :data:`FACES` (whether offered or not: the caller refuses it then), false
    needs :data:`UPSCALE`; ``None`` ("auto") restores faces when some worker can, else upscales only.
    """
    if options.face_enhance is None:
        return FACES if FACES in offered else UPSCALE
    return FACES if options.face_enhance else UPSCALE


def check(capability: str) -> str:
    """``capability`` if it is one of :data:`CAPABILITIES`, else ``ValueError`` (a subject is built from it)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; one of {', '.join(CAPABILITIES)}")
    return capability

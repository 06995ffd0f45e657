"""Writing the model folder's caches (converted weights, compiled engines, eager reference outputs) so that no
reader sees half a file: several processes of one host share the folder and start at once.

A cache that cannot be written (read-only folder, full disk, a serializer's error) is never an error: the thing
is built again at the next start, and the log says why once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def save_atomically(dest: Path, write: Callable[[Path], object], what: str) -> bool:
    """``write`` a temporary file beside ``dest`` (same suffix, for writers that go by it), then move it into
    place: readers see the old file or the whole new one. False, with a warning naming ``what``, if that fails."""
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{threading.get_ident()}.tmp{dest.suffix}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, dest)
        return True
    except Exception as exc:
        log.warning("could not save %s to %s: %s", what, dest, first_line(exc))
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def first_line(exc: BaseException) -> str:
    """An error in one line of at most 300 characters (compilers' errors run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

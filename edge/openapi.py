"""The edge's OpenAPI document without a server: ``python -m edge.openapi [FILE]``.

``make web-types`` writes it to a file and ``openapi-typescript`` turns it into the page's API types
(``web/src/lib/api-types.ts``); ``tests/test_openapi_types.py`` does the same to tell when that file is
stale. The app is built from the default settings (``create_app`` connects to nothing until it starts):
no setting changes the document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .app import create_app
from .settings import EdgeSettings


def document() -> dict[str, Any]:
    """The document FastAPI serves at ``/openapi.json``."""
    return create_app(EdgeSettings.from_env()).openapi()


def main(argv: list[str] | None = None) -> None:
    """Write the document as JSON to the file named, else to standard output."""
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

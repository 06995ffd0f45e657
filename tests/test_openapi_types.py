"""The typed contract, end to end, without servers: the OpenAPI document describes the JSON the clients
read, and the page's API types (``web/src/lib/api-types.ts``) are generated from that very document."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.openapi import document

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
API_TYPES = WEB / "src" / "lib" / "api-types.ts"
GENERATOR = WEB / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
#: JSON answers that another part of the work types (``edge/routes/system.py``, ``edge/routes/servers.py``).
NOT_YET = {"/api/v1/health", "/api/v1/info", "/api/v1/servers", "/webhook/servers"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]


def node() -> str:
    """``node`` as the Makefile finds it: first the directory ``$(NODE_STAMP)`` names (Node from PyPI when
    the machine's is too old), then the PATH."""
    stamp = ROOT / ".venv" / ".node"
    prefix = stamp.read_text().strip() if stamp.is_file() else ""
    found = shutil.which("node", path=prefix + os.environ.get("PATH", ""))
    assert found, "node is missing: `make web-types` (or `make test`) installs it"
    return found


def test_the_generated_api_types_are_up_to_date(doc: dict[str, Any], tmp_path: Path) -> None:
    assert GENERATOR.is_file(), "web/node_modules is missing: run `make web` first"
    source = tmp_path / "openapi.json"
    source.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fresh = tmp_path / "api-types.ts"
    subprocess.run([node(), str(GENERATOR), str(source), "--output", str(fresh)], cwd=WEB, check=True,
                   capture_output=True, timeout=120)
    assert API_TYPES.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
        "web/src/lib/api-types.ts is stale: the edge's JSON changed; run `make web-types` and commit the result")


def test_every_json_answer_has_a_schema(doc: dict[str, Any]) -> None:
    untyped = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                body = response.get("content", {}).get("application/json")
                if body is None or path in NOT_YET:
                    continue
                refs = [body["schema"]] if "$ref" in body["schema"] else body["schema"].get("anyOf", [])
                if not refs or not all("$ref" in r for r in refs):
                    untyped.append(f"{method.upper()} {path} {code}")
    assert not untyped, untyped


def test_every_error_is_described_as_the_clients_read_it(doc: dict[str, Any]) -> None:
    """``{"error": ...}`` (edge/errors.py), also for 422: not FastAPI's validation details."""
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert schema(doc, "ErrorBody")["required"] == ["error"]


@pytest.mark.parametrize(("name", "keys"), [
    ("Accepted", ["task_id", "status", "message", "created_at"]),
    ("TaskStatus", ["task_id", "status", "stage", "message", "progress", "queue_position", "result_url",
                    "download_url", "error", "created_at", "updated_at", "processing_time", "attempts", "options",
                    "input", "output", "output_scale", "notice", "eta_seconds"]),
    ("TaskOptions", ["scale", "quality_level", "tile_size", "face_enhance", "face_strength", "output_format",
                     "output_quality"]),
    ("TaskInput", ["filename", "width", "height", "size"]),
    ("TaskOutput", ["filename", "content_type", "width", "height", "size", "engine", "faces"]),
    ("TaskProgress", ["task_id", "stage", "progress", "message", "eta_seconds"]),
    ("PresignedUpload", ["success", "presigned_url", "file_key", "cos_key", "method", "expires_in", "max_size"]),
    ("ProcessedUpload", ["success", "task_id", "status", "cdn_url", "result_url", "download_url", "width", "height",
                         "size", "content_type", "download_time", "processing_time", "upload_time", "total_time"]),
    ("UnfinishedUpload", ["success", "task_id", "status", "error"]),
    ("Session", ["openid", "token", "expires_at"]),
    ("Account", ["openid", "credits", "credits_reserved", "unlimited", "unlimited_until", "free_daily",
                 "free_left_today", "orders", "uses"]),
])
def test_the_clients_keys_are_all_there_and_never_left_out(doc: dict[str, Any], name: str, keys: list[str]) -> None:
    """The original clients' keys, in order; every one required, so a ``null`` is sent as ``null``."""
    body = schema(doc, name)
    assert list(body["properties"]) == keys
    assert body["required"] == keys


def test_the_event_stream_names_its_events_data(doc: dict[str, Any]) -> None:
    stream = doc["paths"]["/api/v1/events/{task_id}"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    data = stream["itemSchema"]["properties"]["data"]["contentSchema"]
    assert data["anyOf"] == [{"$ref": "#/components/schemas/TaskStatus"}, {"$ref": "#/components/schemas/TaskProgress"}]

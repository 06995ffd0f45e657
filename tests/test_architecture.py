"""The architecture stays visible: services depend on ``bus`` and never on each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("edge", "enhancer", "billing")


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages imported by each module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_services_do_not_import_each_other(service: str) -> None:
    others = set(SERVICES) - {service}
    offenders = {module: names & others for module, names in imported_packages(service).items() if names & others}
    assert not offenders, f"{service} imports another service: {offenders}"


def test_bus_depends_on_no_service() -> None:
    offenders = {m: n & {*SERVICES, "photoenhance"} for m, n in imported_packages("bus").items()
                 if n & {*SERVICES, "photoenhance"}}
    assert not offenders, offenders


def test_only_bus_names_subjects() -> None:
    """Subject, stream and bucket names are written in bus/subjects.py and nowhere else in the services."""
    for service in SERVICES:
        for path in (ROOT / service).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    value = node.value
                    assert not value.startswith(("pe.", "$SRV.", "$KV.", "PE_", "pe-")), (path, value)

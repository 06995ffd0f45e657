"""Offline checks of compose.yaml against the Compose specification.

No Docker engine is needed: the file is loaded with PyYAML (anchors and `<<` merge keys resolved the
same way Compose resolves them), `${VAR...}` is interpolated the way Compose interpolates it, and the
result is validated with `jsonschema` against the official compose-spec JSON schema vendored in
tests/data/compose-spec.json (see tests/data/README.md for where it comes from). Compose itself
validates after interpolation, so the test does too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

# Secrets that compose.yaml must demand (`${VAR:?...}`): no default, fail fast when missing.
REQUIRED_SECRETS = (
    "EDGE_NATS_PASSWORD",
    "ENHANCER_NATS_PASSWORD",
    "BILLING_NATS_PASSWORD",
    "ADMIN_NATS_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)
# Distinct, recognisable values so a test can tell which variable ended up where.
TEST_ENV = {name: f"test-{name.lower().replace('_', '-')}-value" for name in REQUIRED_SECRETS}

NATS_CLIENTS = {"edge": "edge", "enhancer": "enhancer", "billing": "billing"}  # service -> NATS user
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
# Compose-style interpolation
# --------------------------------------------------------------------------------------------------
class InterpolationError(ValueError):
    pass


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def _matching_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` whose `{` is at text[start]; nested `${...}` allowed."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "{" and i == start:
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _substitute(expr: str, env: Mapping[str, str]) -> str:
    """Evaluate the inside of one `${...}`."""
    match = _NAME_RE.match(expr)
    if not match:
        raise InterpolationError(f"invalid interpolation format: ${{{expr}}}")
    name, rest = match.group(), expr[match.end() :]
    if not rest:
        return env.get(name, "")
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"invalid interpolation format: ${{{expr}}}")
    arg = rest[len(op) :]
    is_set = name in env
    non_empty = bool(env.get(name))
    present = non_empty if op.startswith(":") else is_set
    if op in (":-", "-"):
        return env[name] if present else interpolate_string(arg, env)
    if op in (":?", "?"):
        if not present:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return env[name]
    # ":+" / "+": alternative value when set
    return interpolate_string(arg, env) if present else ""


def interpolate_string(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _matching_brace(text, i + 1)
            out.append(_substitute(text[i + 2 : end], env))
            i = end + 1
        elif text[i] == "$" and (m := _NAME_RE.match(text, i + 1)):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def interpolate(node, env: Mapping[str, str]):
    """Interpolate every string value (not keys), as Compose does."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if isinstance(node, str):
        return interpolate_string(node, env)
    return node


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema):
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def raw() -> dict:
    """compose.yaml as YAML, before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def config(raw) -> dict:
    """compose.yaml interpolated with test secrets."""
    return interpolate(raw, TEST_ENV)


def schema_errors(validator, document) -> list[str]:
    return [
        f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def environment(service: dict) -> dict:
    """A service's environment as a dict (Compose accepts a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def named_volume_sources(service: dict) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source and not source.startswith((".", "/", "~", "$")):
            sources.append(source)
    return sources


# --------------------------------------------------------------------------------------------------
# The interpolation helper itself (so that the checks below can rely on it)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A/x", {"A": "1"}, "1/x"),
        ("${A}", {}, ""),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-${B:-z}}", {}, "z"),
        ("${A:+alt}", {"A": "1"}, "alt"),
        ("${A:+alt}", {"A": ""}, ""),
        ("${A?e}", {"A": ""}, ""),
        ("$${A}", {"A": "1"}, "${A}"),
        ("http://${H:-localhost}:9000", {}, "http://localhost:9000"),
    ],
)
def test_interpolation_helper(template, env, expected):
    assert interpolate_string(template, env) == expected


@pytest.mark.parametrize(
    ("template", "env"), [("${A:?need A}", {}), ("${A:?need A}", {"A": ""}), ("${A?x}", {})]
)
def test_interpolation_helper_required(template, env):
    with pytest.raises(InterpolationError, match=r"need A|A is missing"):
        interpolate_string(template, env)


# --------------------------------------------------------------------------------------------------
# The schema and the validator
# --------------------------------------------------------------------------------------------------
def test_vendored_schema_is_the_compose_spec(schema):
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    # the features compose.yaml relies on are in this version of the spec
    assert (
        "devices"
        in schema["definitions"]["deployment"]["properties"]["resources"]["properties"]["reservations"][
            "properties"
        ]
    )
    assert "service_healthy" in json.dumps(schema["definitions"]["service"]["properties"]["depends_on"])


def test_compose_file_validates_against_the_spec(validator, config):
    assert schema_errors(validator, config) == []


BROKEN_COPIES = {
    # id: (path to the key to set, value, where the error must be reported)
    "ports-not-a-list": (("services", "edge", "ports"), 12, "services/edge/ports"),
    "bad-depends-on-condition": (
        ("services", "edge", "depends_on"),
        {"nats": {"condition": "up"}},
        "services/edge/depends_on",
    ),
    "device-without-capabilities": (
        ("services", "enhancer", "deploy", "resources", "reservations", "devices"),
        [{"driver": "nvidia", "count": 1}],
        "services/enhancer/deploy",
    ),
    "unknown-service-key": (("services", "billing", "restart_policy"), "always", "services/billing"),
    "unknown-top-level-key": (("servics",), {}, "<root>"),
    "healthcheck-interval-not-a-string": (
        ("services", "nats", "healthcheck", "interval"),
        10,
        "services/nats/healthcheck/interval",
    ),
}


@pytest.mark.parametrize(("path", "value", "where"), BROKEN_COPIES.values(), ids=BROKEN_COPIES.keys())
def test_validator_rejects_broken_copies(validator, config, path, value, where):
    broken = copy.deepcopy(config)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    errors = schema_errors(validator, broken)
    assert errors, "schema validation accepted a deliberately broken compose file"
    assert any(err.startswith(where) for err in errors), errors


# --------------------------------------------------------------------------------------------------
# What compose.yaml must contain
# --------------------------------------------------------------------------------------------------
def test_services_exist(config):
    assert set(config["services"]) >= {"nats", "minio", "edge", "enhancer", "billing"}


def test_nats_service(config):
    nats = config["services"]["nats"]
    assert nats["image"] == "nats:2.11-alpine"
    assert "/etc/nats/nats-server.conf" in " ".join(nats["command"])
    assert "./nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert any(v.endswith(":/data/jetstream") for v in nats["volumes"])
    env = environment(nats)
    assert env["NATS_STORE_DIR"] == "/data/jetstream"
    for user in (*NATS_CLIENTS.values(), "admin"):
        var = f"{user.upper()}_NATS_PASSWORD"
        assert env[var] == TEST_ENV[var]
    published = " ".join(map(str, nats["ports"]))
    assert "4222:4222" in published and "8222:8222" in published


def test_minio_service(config):
    minio = config["services"]["minio"]
    assert minio["image"].startswith("minio/minio")
    assert minio["command"] == ["server", "/data", "--console-address", ":9001"]
    env = environment(minio)
    assert env["MINIO_ROOT_USER"] == TEST_ENV["S3_ACCESS_KEY"]
    assert env["MINIO_ROOT_PASSWORD"] == TEST_ENV["S3_SECRET_KEY"]
    assert "healthcheck" in minio


@pytest.mark.parametrize(("service", "user"), sorted(NATS_CLIENTS.items()))
def test_nats_clients_are_wired(config, service, user):
    svc = config["services"][service]
    env = environment(svc)
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["NATS_USER"] == user
    # the client's password is the very variable the server's config reads for that role
    assert env["NATS_PASSWORD"] == TEST_ENV[f"{user.upper()}_NATS_PASSWORD"]
    assert svc["command"] == ["photoenhance", service]
    assert "build" in svc
    assert "nats" in svc["depends_on"]
    assert svc["restart"] == "unless-stopped"


@pytest.mark.parametrize("service", ["edge", "enhancer"])
def test_s3_clients_are_wired(config, service):
    env = environment(config["services"][service])
    assert env["S3_ENDPOINT"] == "http://minio:9000"
    assert env["S3_PUBLIC_ENDPOINT"] == "http://localhost:9000"
    assert env["S3_ACCESS_KEY"] == TEST_ENV["S3_ACCESS_KEY"]
    assert env["S3_SECRET_KEY"] == TEST_ENV["S3_SECRET_KEY"]
    assert env["S3_BUCKET"] == "photoenhance"
    assert config["services"][service]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_edge_service(config):
    edge = config["services"]["edge"]
    env = environment(edge)
    assert env["EDGE_HOST"] == "0.0.0.0"
    assert str(env["EDGE_PORT"]) == "8000"
    assert env["ADMIN_TOKEN"] == ""
    assert str(env["RETENTION_HOURS"]) == "24"
    assert any(str(p).endswith("8000:8000") for p in edge["ports"])


def test_enhancer_has_gpu_reservation(config):
    enhancer = config["services"]["enhancer"]
    devices = enhancer["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") in (1, "all")
        for d in devices
    ), devices
    env = environment(enhancer)
    assert env["MODEL_DIR"] == "/models"
    assert str(env["ENHANCER_CONCURRENCY"]) == "1"
    assert env["ENHANCER_DEVICE"] == "auto"
    assert any(v.endswith(":/models") for v in enhancer["volumes"])
    assert "ports" not in enhancer


def test_billing_service(config):
    billing = config["services"]["billing"]
    assert environment(billing)["BILLING_DB"] == "/data/billing.sqlite3"
    assert any(v.endswith(":/data") for v in billing["volumes"])


def test_named_volumes_and_dependencies_are_declared(config):
    declared = set(config.get("volumes") or {})
    for name, service in config["services"].items():
        for source in named_volume_sources(service):
            assert source in declared, f"{name} mounts undeclared volume {source!r}"
        for dependency in service.get("depends_on", {}):
            assert dependency in config["services"], f"{name} depends on unknown service {dependency!r}"
            condition = service["depends_on"][dependency]["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in config["services"][dependency], f"{dependency} has no healthcheck"


def test_shared_settings_come_from_an_extension_field(raw):
    common = raw["x-service-common"]
    assert common["restart"] == "unless-stopped"
    for service in NATS_CLIENTS:
        # the merged-in settings are identical objects, i.e. they came from the anchor
        assert raw["services"][service]["build"] is common["build"]


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------
def _secret_values(raw):
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if SECRET_KEY_RE.search(key):
                yield name, key, value


def test_secrets_only_come_from_the_environment(raw):
    seen = list(_secret_values(raw))
    assert len(seen) >= 8
    for service, key, value in seen:
        assert isinstance(value, str) and value.startswith("${") and value.endswith("}"), (
            f"{service}.{key} is a literal: {value!r}"
        )
        inner = value[2:-1]
        # no default secret: either required (`:?`/`?`) or an explicitly empty default
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(:?\?.*|:-)", inner), f"{service}.{key}: {value!r}"


@pytest.mark.parametrize("variable", REQUIRED_SECRETS)
def test_every_required_secret_is_guarded(raw, variable):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert re.search(r"\$\{" + variable + r":\?[^}]+\}", text), f"{variable} lacks a ${{{variable}:?...}}"
    assert not re.search(r"\$\{" + variable + r":?[-+]", text), f"{variable} has a default or alternative"


@pytest.mark.parametrize("variable", REQUIRED_SECRETS)
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_interpolation_fails_without_a_secret(raw, variable, how):
    env = dict(TEST_ENV)
    if how == "unset":
        del env[variable]
    else:
        env[variable] = ""
    with pytest.raises(InterpolationError, match=variable):
        interpolate(raw, env)


def test_interpolation_fails_with_no_env_at_all(raw):
    with pytest.raises(InterpolationError):
        interpolate(raw, {})


# --------------------------------------------------------------------------------------------------
# Cross-checks with the files compose.yaml uses
# --------------------------------------------------------------------------------------------------
def nats_conf_external_variables(text: str) -> set[str]:
    """`$NAME` references in a nats-server config that the config does not define itself.

    nats-server resolves such a reference from its environment and refuses to start when the
    variable is missing. `$` inside a quoted string is literal (subjects like "$JS.API.>").
    """
    text = re.sub(r'"[^"\n]*"|\'[^\'\n]*\'', '""', text)
    text = re.sub(r"(#|//).*", "", text)
    referenced = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    defined = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=|:|\{)", text, re.MULTILINE))
    return referenced - defined


def test_nats_conf_variable_parser():
    conf = 'P = {allow = ["$JS.API.>"]}  # $NOT_A_REF\nuser: {password: $PW, permissions: $P}\n'
    assert nats_conf_external_variables(conf) == {"PW"}


def test_nats_service_passes_every_variable_the_server_conf_reads(config):
    conf = ROOT / "nats" / "nats-server.conf"
    needed = nats_conf_external_variables(conf.read_text(encoding="utf-8"))
    for user in NATS_CLIENTS.values():
        assert f"{user.upper()}_NATS_PASSWORD" in needed
    assert "NATS_STORE_DIR" in needed
    missing = needed - set(environment(config["services"]["nats"]))
    assert not missing, f"nats-server.conf reads {sorted(missing)}, which compose.yaml does not pass"
    assert re.search(r"^\s*http(_port)?\s*[:=]\s*8222", conf.read_text(encoding="utf-8"), re.MULTILINE), (
        "the nats healthcheck needs the monitoring port (8222) enabled in nats-server.conf"
    )


def test_dockerfile_and_dockerignore_agree():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", "web/node_modules", "tests", ".env"} <= ignored
    copied = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
        if not source.startswith("--")
    ]
    for package in ("bus", "edge", "enhancer", "billing", "photoenhance", "web", "nats", "pyproject.toml"):
        assert package in copied
    assert not ignored & set(copied)
    assert re.search(r"^USER (?!root\b)\S+", dockerfile, re.MULTILINE), "the image must not run as root"
    assert 'pip install --no-deps "facenet-pytorch==2.6.0"' in dockerfile

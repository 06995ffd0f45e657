"""Offline checks of compose.yaml (and the nats/compose.cluster.yaml override) against the Compose spec.

No Docker engine is needed: the file is loaded with PyYAML (anchors and `<<` merge keys resolved the
same way Compose resolves them), `${VAR...}` is interpolated the way Compose interpolates it, and the
result is validated with `jsonschema` against the official compose-spec JSON schema vendored in
tests/data/compose-spec.json (see tests/data/README.md for where it comes from). Compose itself
validates after interpolation, so the test does too. The cluster override is merged into compose.yaml
the way `docker compose -f compose.yaml -f nats/compose.cluster.yaml` merges it (see `compose_merge`),
and the merged model is checked as well.
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
CLUSTER_FILE = ROOT / "nats" / "compose.cluster.yaml"
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
NATS_PASSWORDS = tuple(name for name in REQUIRED_SECRETS if name.endswith("_NATS_PASSWORD"))
NATS_CONF_PATH = "/etc/nats/nats-server.conf"
NATS_CONF_MOUNT = f"./nats/nats-server.conf:{NATS_CONF_PATH}:ro"
CLUSTER_NODES = ("nats", "nats-2", "nats-3")  # service names of the cluster's nodes
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
# Compose-style merging of several files (`docker compose -f a.yaml -f b.yaml`)
# --------------------------------------------------------------------------------------------------
# The rules of https://docs.docker.com/reference/compose-file/merge/ (as compose-go applies them):
# mappings are merged key by key; sequences are appended, except that `command`, `entrypoint` and
# `healthcheck.test` are replaced, `environment` (and the other KEY=VALUE attributes) is merged by
# key whichever form each file uses, and `volumes`/`ports` entries sharing a unique key (a volume's
# container path, a port's ip/published/target/protocol) are replaced rather than added.
_REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
_BY_KEY = {("environment",), ("labels",), ("annotations",), ("sysctls",), ("build", "args")}


def _key_value_mapping(value) -> dict:
    if isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)
    return dict(value or {})


def _volume_target(volume) -> str:
    if isinstance(volume, dict):
        return volume["target"]
    parts = volume.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _port_key(port) -> tuple:
    if isinstance(port, dict):
        return (
            port.get("host_ip", ""),
            str(port.get("published", "")),
            str(port["target"]),
            port.get("protocol", "tcp"),
        )
    spec, _, protocol = str(port).partition("/")
    *host, target = spec.rsplit(":", 2)
    host_ip, published = [""] * (2 - len(host)) + host
    return (host_ip, published, target, protocol or "tcp")


def _merge_unique(base: list, override: list, key) -> list:
    merged = {key(item): item for item in base}
    for item in override:
        merged[key(item)] = copy.deepcopy(item)
    return list(merged.values())


def compose_merge(base, override, path: tuple = ()):
    """`override` merged into `base` (both already interpolated), as Compose merges its -f files."""
    service_path = path[2:] if len(path) > 2 and path[0] == "services" else None
    if service_path in _REPLACED:
        return copy.deepcopy(override)
    if service_path in _BY_KEY:
        return {**_key_value_mapping(base), **_key_value_mapping(override)}
    if service_path == ("volumes",):
        return _merge_unique(base, override, _volume_target)
    if service_path == ("ports",):
        return _merge_unique(base, override, _port_key)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = compose_merge(base[key], value, (*path, key)) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return [*base, *copy.deepcopy(override)]
    return copy.deepcopy(override)


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


@pytest.fixture(scope="module")
def cluster_raw() -> dict:
    """nats/compose.cluster.yaml as YAML, before interpolation."""
    return yaml.safe_load(CLUSTER_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cluster_config(config, cluster_raw) -> dict:
    """compose.yaml + nats/compose.cluster.yaml: each file interpolated, then merged (as Compose does)."""
    return compose_merge(config, interpolate(cluster_raw, TEST_ENV))


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


def command_flags(command: list[str]) -> dict[str, str]:
    """`["-c", "x", "--routes=y"]` -> `{"c": "x", "routes": "y"}` (nats-server takes -flag and --flag)."""
    flags = {}
    args = iter(command)
    for arg in args:
        assert arg.startswith("-"), f"stray argument {arg!r} in {command}"
        name, eq, value = arg.lstrip("-").partition("=")
        assert name not in flags, f"{arg} given twice in {command}"
        flags[name] = value if eq else next(args, None)
    return flags


def published_host_ports(service: dict) -> list[str]:
    return [key[1] for key in map(_port_key, service.get("ports", [])) if key[1]]


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
# The merge helper itself
# --------------------------------------------------------------------------------------------------
def test_merge_helper_follows_the_compose_rules():
    base = {
        "name": "p",
        "services": {
            "a": {
                "image": "x:1",
                "command": ["run", "--one"],
                "healthcheck": {"test": ["CMD", "a"], "interval": "10s"},
                "environment": ["KEEP=1", "CHANGE=old"],
                "volumes": ["data:/data", "./conf:/etc/conf:ro"],
                "ports": ["4222:4222", "127.0.0.1:8222:8222"],
                "dns": ["1.1.1.1"],
                "deploy": {"replicas": "1", "resources": {"limits": {"cpus": "1"}}},
            }
        },
        "volumes": {"data": None},
    }
    override = {
        "services": {
            "a": {
                "command": ["run"],
                "healthcheck": {"test": ["CMD", "b"]},
                "environment": {"CHANGE": "new", "ADD": "2"},
                "volumes": ["other:/data"],
                "ports": ["127.0.0.1:8222:8222", "6222:6222"],
                "dns": ["8.8.8.8"],
                "deploy": {"resources": {"limits": {"memory": "1g"}}},
            },
            "b": {"image": "y:1"},
        },
        "volumes": {"other": None},
    }
    merged = compose_merge(base, override)
    a = merged["services"]["a"]
    assert a["image"] == "x:1"
    assert a["command"] == ["run"]
    assert a["healthcheck"] == {"test": ["CMD", "b"], "interval": "10s"}
    assert a["environment"] == {"KEEP": "1", "CHANGE": "new", "ADD": "2"}
    assert a["volumes"] == ["other:/data", "./conf:/etc/conf:ro"]
    assert a["ports"] == ["4222:4222", "127.0.0.1:8222:8222", "6222:6222"]
    assert a["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert a["deploy"] == {"replicas": "1", "resources": {"limits": {"cpus": "1", "memory": "1g"}}}
    assert merged["services"]["b"] == {"image": "y:1"}
    assert merged["volumes"] == {"data": None, "other": None}
    assert base["services"]["a"]["command"] == ["run", "--one"], "the merge must not modify its inputs"


@pytest.mark.parametrize(
    ("port", "key"),
    [
        ("4222:4222", ("", "4222", "4222", "tcp")),
        ("127.0.0.1:8222:8222", ("127.0.0.1", "8222", "8222", "tcp")),
        ("9000", ("", "", "9000", "tcp")),
        ("53:53/udp", ("", "53", "53", "udp")),
    ],
)
def test_port_key(port, key):
    assert _port_key(port) == key


def test_command_flags_helper():
    assert command_flags(["-c", "f", "--routes=a,b", "--cluster", "u"]) == {"c": "f", "routes": "a,b", "cluster": "u"}
    for bad in (["stray"], ["-c", "f", "--c", "g"]):
        with pytest.raises(AssertionError):
            command_flags(bad)


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


def test_cluster_override_validates_against_the_spec(validator, cluster_raw, cluster_config):
    # Compose validates each file and the merged model; the override alone is a valid (partial) file.
    assert schema_errors(validator, interpolate(cluster_raw, TEST_ENV)) == []
    assert schema_errors(validator, cluster_config) == []


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
    assert env["ENHANCER_CONCURRENCY"] == "auto"  # 4 jobs on a GPU, 1 on a CPU
    assert env["ENHANCER_DEVICE"] == "auto"
    assert any(v.endswith(":/models") for v in enhancer["volumes"])
    assert "ports" not in enhancer


def test_billing_service(config):
    billing = config["services"]["billing"]
    assert environment(billing)["BILLING_DB"] == "/data/billing.sqlite3"
    assert any(v.endswith(":/data") for v in billing["volumes"])


# service -> settings it reads, each with its documented default; all overridable from .env
_EVERY_SERVICE = {"NATS_REPLICAS": "1", "TASK_ACK_WAIT": "30", "TASK_MAX_ATTEMPTS": "3", "RETENTION_HOURS": "24"}
SETTINGS_WITH_DEFAULTS = {
    "edge": {**_EVERY_SERVICE, "QUEUE_LIMIT": "1000", "REGISTRY_MISSED_BEATS": "3", "REGISTRY_FORGET_AFTER": "300"},
    "enhancer": {**_EVERY_SERVICE, "ENHANCER_HEARTBEAT": "5", "ENHANCER_MAX_FACES": "10"},
    "billing": _EVERY_SERVICE,
}


@pytest.mark.parametrize("service", sorted(SETTINGS_WITH_DEFAULTS))
def test_settings_have_overridable_defaults(raw, config, service):
    raw_env = environment(raw["services"][service])
    env = environment(config["services"][service])
    for variable, default in SETTINGS_WITH_DEFAULTS[service].items():
        assert raw_env.get(variable) == f"${{{variable}:-{default}}}", (
            f"{service}.{variable}: {raw_env.get(variable)!r}"
        )
        assert str(env[variable]) == default


@pytest.mark.parametrize("model", ["config", "cluster_config"])
def test_enhancer_is_scalable(request, model):
    """`docker compose up -d --scale enhancer=3` must work: nothing a second replica would clash on."""
    services = request.getfixturevalue(model)["services"]
    enhancer = services["enhancer"]
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in enhancer, f"enhancer.{fixed} would collide between replicas"
    # each replica names itself <hostname>-<pid>; a fixed ENHANCER_ID would give them all one name
    assert "ENHANCER_ID" not in environment(enhancer)
    assert str(enhancer["deploy"]["replicas"]) == "1"
    # the GPU reservation is per replica and survives the merge
    devices = enhancer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    # the models volume is shared (weights are written atomically), nothing else is mounted per replica
    assert named_volume_sources(enhancer) == ["models"]


def test_enhancer_replicas_come_from_the_environment(raw):
    deploy = raw["services"]["enhancer"]["deploy"]
    assert deploy["replicas"] == "${ENHANCER_REPLICAS:-1}"
    scaled = interpolate(raw, {**TEST_ENV, "ENHANCER_REPLICAS": "3"})
    assert scaled["services"]["enhancer"]["deploy"]["replicas"] == "3"


# --------------------------------------------------------------------------------------------------
# The 3-node cluster override (nats/compose.cluster.yaml)
# --------------------------------------------------------------------------------------------------
def test_cluster_file_documents_its_usage():
    header = CLUSTER_FILE.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert "docker compose -f compose.yaml -f nats/compose.cluster.yaml up -d" in header


def test_cluster_has_three_nats_nodes(config, cluster_config):
    services = cluster_config["services"]
    nodes = {name for name, svc in services.items() if str(svc.get("image", "")).startswith("nats:")}
    assert nodes == set(CLUSTER_NODES)
    for name in CLUSTER_NODES:
        node = services[name]
        assert node["image"] == config["services"]["nats"]["image"], f"{name} runs another nats-server"
        assert node["restart"] == "unless-stopped"
        assert NATS_CONF_MOUNT in node["volumes"], f"{name} does not mount the same config file"
        health = " ".join(node["healthcheck"]["test"])
        assert "8222/healthz" in health, f"{name}: {health}"
    # the other services are untouched apart from their environment
    assert set(services) == set(config["services"]) | set(CLUSTER_NODES)


def test_cluster_nodes_have_distinct_names_and_stores(cluster_config):
    services = cluster_config["services"]
    declared = set(cluster_config["volumes"])
    names, stores = [], []
    for name in CLUSTER_NODES:
        env = environment(services[name])
        assert env.get("NATS_SERVER_NAME"), f"{name} has no NATS_SERVER_NAME"
        names.append(env["NATS_SERVER_NAME"])
        store_dir = env["NATS_STORE_DIR"]
        mounts = [v for v in services[name]["volumes"] if _volume_target(v) == store_dir]
        assert len(mounts) == 1, f"{name} mounts {mounts} at its store dir {store_dir}"
        source = mounts[0].split(":", 1)[0]
        assert source in declared, f"{name} stores JetStream data in {source!r}, not a named volume"
        stores.append(source)
    assert len(set(names)) == len(CLUSTER_NODES), f"server names must differ: {names}"
    assert len(set(stores)) == len(CLUSTER_NODES), f"each node needs its own store volume: {stores}"
    # node 1 keeps the single server's volume
    assert stores[0] == "nats-data"


def test_cluster_nodes_route_to_each_other(cluster_config):
    services = cluster_config["services"]
    cluster_names = set()
    for name in CLUSTER_NODES:
        flags = command_flags(services[name]["command"])
        assert (flags.get("c") or flags.get("config")) == NATS_CONF_PATH, f"{name}: {flags}"
        cluster_names.add(flags.get("cluster_name"))
        listen = flags.get("cluster", "")
        assert re.fullmatch(r"nats://0\.0\.0\.0:6222", listen), f"{name} listens for routes on {listen!r}"
        routes = (flags.get("routes") or "").split(",")
        assert len(routes) == len(set(routes)) == len(CLUSTER_NODES), f"{name}: {routes}"
        assert set(routes) == {f"nats://{node}:6222" for node in CLUSTER_NODES}, f"{name}: {routes}"
    assert cluster_names == {"photoenhance"}, cluster_names


def test_cluster_nodes_get_every_variable_the_server_conf_reads(cluster_config):
    needed = nats_conf_external_variables((ROOT / "nats" / "nats-server.conf").read_text(encoding="utf-8"))
    for name in CLUSTER_NODES:
        env = environment(cluster_config["services"][name])
        assert not needed - set(env), f"{name} lacks {sorted(needed - set(env))}"
        for variable in NATS_PASSWORDS:
            assert env[variable] == TEST_ENV[variable], f"{name}.{variable}"


def test_cluster_publishes_no_host_port_twice(cluster_config):
    services = cluster_config["services"]
    published = [port for svc in services.values() for port in published_host_ports(svc)]
    assert len(published) == len(set(published)), published
    # node 1 keeps the single server's ports (clients outside this host); the others publish none
    assert {"4222", "8222"} <= set(published_host_ports(services["nats"]))
    for name in CLUSTER_NODES[1:]:
        assert "ports" not in services[name], f"{name} publishes {services[name]['ports']}"


@pytest.mark.parametrize(("service", "user"), sorted(NATS_CLIENTS.items()))
def test_cluster_clients_list_every_node(cluster_config, service, user):
    svc = cluster_config["services"][service]
    env = environment(svc)
    servers = env["NATS_URL"].split(",")
    assert len(servers) == len(set(servers)) == len(CLUSTER_NODES), servers
    assert set(servers) == {f"nats://{node}:4222" for node in CLUSTER_NODES}, servers
    assert str(env["NATS_REPLICAS"]) == "3"
    assert int(env["NATS_REPLICAS"]) <= len(CLUSTER_NODES)
    # merged by key: the rest of the environment is still there
    assert env["NATS_USER"] == user
    assert env["NATS_PASSWORD"] == TEST_ENV[f"{user.upper()}_NATS_PASSWORD"]
    assert str(env["TASK_ACK_WAIT"]) == "30"
    assert svc["command"] == ["photoenhance", service]
    assert svc["depends_on"]["nats"]["condition"] == "service_healthy"


@pytest.mark.parametrize("model", ["config", "cluster_config"])
def test_named_volumes_and_dependencies_are_declared(request, model):
    config = request.getfixturevalue(model)
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


def test_cluster_secrets_only_come_from_the_environment(cluster_raw):
    seen = list(_secret_values(cluster_raw))
    assert len(seen) >= 2 * len(NATS_PASSWORDS)  # nats-2 and nats-3
    for service, key, value in seen:
        assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]+\}", value), (
            f"{service}.{key}: {value!r}"
        )
    text = CLUSTER_FILE.read_text(encoding="utf-8")
    for variable in REQUIRED_SECRETS:
        assert not re.search(r"\$\{" + variable + r":?[-+]", text), f"{variable} has a default or alternative"


@pytest.mark.parametrize("variable", NATS_PASSWORDS)
def test_cluster_interpolation_fails_without_a_secret(cluster_raw, variable):
    env = {k: v for k, v in TEST_ENV.items() if k != variable}
    with pytest.raises(InterpolationError, match=variable):
        interpolate(cluster_raw, env)


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

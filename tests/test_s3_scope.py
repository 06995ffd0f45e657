"""Least privilege in S3: each role's real keys, tried against the real server, can do what the role
needs and nothing else; a revoked enhancer's keys stop working at once; and S3 calls cannot hang.

The attempts run against the session's SeaweedFS (``s3_server``) with the keys the services get
(``EmbeddedS3.env(role)``); the objects are checked unchanged afterwards with the root keys. MinIO
cannot run here: its policies are the same documents, checked as JSON below.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import LifecycleConfig

from bus.settings import S3Settings
from bus.storage import ObjectMissing, ObjectStore, ObjectTooLarge, StorageError, presign_put_url
from photoenhance.s3_access import (
    SCOPES,
    MinioAccess,
    S3AccessError,
    S3Identity,
    S3Keys,
    SeaweedAccess,
    policy_document,
    policy_name,
)
from photoenhance.servers import EmbeddedS3, embedded_s3_admin

#: One object under each prefix, written with the root keys before the attempts.
SEEDS = {"inputs/scope-t/in.jpg": b"input bytes", "outputs/scope-t/out.jpg": b"output bytes",
         "uploads/scope-t/up.jpg": b"staged bytes"}


def client(s3: EmbeddedS3, keys: dict[str, str]) -> Minio:
    return Minio(s3.endpoint.removeprefix("http://"), access_key=keys["S3_ACCESS_KEY"],
                 secret_key=keys["S3_SECRET_KEY"], secure=False, region="us-east-1")


@pytest.fixture
def seeded(s3_server: EmbeddedS3) -> Iterator[Minio]:
    root = client(s3_server, s3_server.env("admin"))
    for key, data in SEEDS.items():
        root.put_object(s3_server.bucket, key, io.BytesIO(data), len(data))
    yield root
    for obj in root.list_objects(s3_server.bucket, recursive=True):
        if obj.object_name and "scope-t" in obj.object_name:
            root.remove_object(s3_server.bucket, obj.object_name)


def attempts(c: Minio, bucket: str) -> dict[str, Callable[[], Any]]:
    """Every operation tried with each role's keys, by name."""
    def put(key: str) -> Callable[[], Any]:
        return lambda: c.put_object(bucket, key, io.BytesIO(b"attacker"), 8)

    def get(key: str) -> Callable[[], Any]:
        return lambda: c.get_object(bucket, key).read()

    def listing(prefix: str | None) -> Callable[[], Any]:
        return lambda: list(c.list_objects(bucket, prefix=prefix, recursive=True))

    def delete_batch() -> None:
        keys = [DeleteObject(k) for k in SEEDS if not k.startswith("uploads/")]
        errors = list(c.remove_objects(bucket, keys))
        if errors:
            raise Refused(", ".join(sorted({e.code for e in errors})))

    return {
        "get inputs": get("inputs/scope-t/in.jpg"), "get outputs": get("outputs/scope-t/out.jpg"),
        "get uploads": get("uploads/scope-t/up.jpg"),
        "put inputs": put("inputs/scope-t/new.jpg"), "put outputs": put("outputs/scope-t/new.jpg"),
        "put uploads": put("uploads/scope-t/new.jpg"),
        "overwrite inputs": put("inputs/scope-t/in.jpg"), "overwrite outputs": put("outputs/scope-t/out.jpg"),
        "delete inputs": lambda: c.remove_object(bucket, "inputs/scope-t/in.jpg"),
        "delete outputs": lambda: c.remove_object(bucket, "outputs/scope-t/out.jpg"),
        "delete uploads": lambda: c.remove_object(bucket, "uploads/scope-t/up.jpg"),
        "delete many": delete_batch,
        "list bucket": listing(None), "list inputs": listing("inputs/"), "list outputs": listing("outputs/"),
        "list uploads": listing("uploads/"),
        "copy uploads to outputs": lambda: c.copy_object(bucket, "outputs/scope-t/copied.jpg",
                                                         CopySource(bucket, "uploads/scope-t/up.jpg")),
        "head bucket": lambda: c.bucket_exists(bucket),
        "make bucket": lambda: c.make_bucket("scope-other"),
        "delete bucket": lambda: c.remove_bucket(bucket),
        "read lifecycle": lambda: c.get_bucket_lifecycle(bucket),
        "drop lifecycle": lambda: c.set_bucket_lifecycle(bucket, LifecycleConfig([])),
        "set bucket policy": lambda: c.set_bucket_policy(bucket, json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:*"],
                                                    "Resource": [f"arn:aws:s3:::{bucket}/*"]}]})),
    }


#: What each role may do (tried in this order, deletes last); every other attempt must be refused.
ALLOWED = {
    "enhancer": ("get inputs", "put outputs", "overwrite outputs"),
    "edge": ("get outputs", "get uploads", "list uploads", "put inputs", "put uploads", "overwrite inputs",
             "delete inputs", "delete outputs", "delete uploads", "delete many"),
}


class Refused(Exception):
    """A batch call answered with per-key errors."""


def refused(op: Callable[[], Any]) -> bool:
    try:
        op()
    except Refused as e:
        assert str(e) == "AccessDenied", e
        return True
    except S3Error as e:
        assert e.code in ("AccessDenied", "InvalidAccessKeyId"), e.code
        return True
    return False


@pytest.mark.parametrize("role", ["enhancer", "edge"])
def test_each_role_can_do_its_job_and_nothing_else(s3_server: EmbeddedS3, seeded: Minio, role: str) -> None:
    c = client(s3_server, s3_server.env(role))
    ops = attempts(c, s3_server.bucket)
    lifecycle = seeded.get_bucket_lifecycle(s3_server.bucket)
    allowed = ALLOWED[role]
    # Out-of-scope first, so the objects they would harm are still there to harm.
    outcome = {name: refused(op) for name, op in ops.items() if name not in allowed}
    assert [name for name, was_refused in outcome.items() if not was_refused] == []
    bucket = s3_server.bucket
    for key, data in SEEDS.items():
        assert seeded.get_object(bucket, key).read() == data, f"{key} changed by refused attempts"
    names = [o.object_name or "" for o in seeded.list_objects(bucket, recursive=True)]
    assert not any(n.endswith(("new.jpg", "copied.jpg")) for n in names)
    assert seeded.bucket_exists("scope-other") is False
    assert str(seeded.get_bucket_lifecycle(bucket)) == str(lifecycle)
    for name in allowed:
        assert not refused(ops[name]), f"{role} could not {name}"


def test_billing_and_unknown_roles_get_no_keys(s3_server: EmbeddedS3) -> None:
    env = s3_server.env("billing")
    assert "S3_ACCESS_KEY" not in env and "S3_SECRET_KEY" not in env
    with pytest.raises(ValueError):
        s3_server.env("intruder")
    assert {s3_server.env(r)["S3_ACCESS_KEY"] for r in ("edge", "enhancer")}.isdisjoint({s3_server.access_key})


def test_presigned_put_signed_by_an_enhancer_is_refused(s3_server: EmbeddedS3, seeded: Minio) -> None:
    """A URL is only as strong as the keys that sign it: an enhancer's keys sign nothing under inputs/."""
    keys = s3_server.env("enhancer")
    url = presign_put_url(s3_server.endpoint, s3_server.bucket, "inputs/scope-t/in.jpg", region="us-east-1",
                          access_key=keys["S3_ACCESS_KEY"], secret_key=keys["S3_SECRET_KEY"], expires=60)
    assert httpx.put(url, content=b"swapped").status_code == 403
    assert seeded.get_object(s3_server.bucket, "inputs/scope-t/in.jpg").read() == SEEDS["inputs/scope-t/in.jpg"]


def as_user(s3: EmbeddedS3, keys: S3Keys) -> SeaweedAccess:
    """The IAM API with a non-admin's keys (what a thief holding them could call)."""
    return SeaweedAccess(S3Settings(endpoint=s3.endpoint, access_key=keys.access_key, secret_key=keys.secret_key,
                                    bucket=s3.bucket))


def test_a_revoked_enhancer_is_cut_off_at_once_and_alone(s3_server: EmbeddedS3, seeded: Minio) -> None:
    # As ``photoenhance credentials`` does from another process: the live server's admin settings, kept
    # beside its data, readable by the operator only.
    assert (s3_server.admin_env_path.stat().st_mode & 0o777) == 0o600
    access = SeaweedAccess(embedded_s3_admin(s3_server.data_dir))
    keys = access.create("gpu-host-7", "enhancer")
    assert S3Identity("gpu-host-7", "enhancer", (keys.access_key,)) in access.list()
    worker = client(s3_server, keys.env())
    assert worker.get_object(s3_server.bucket, "inputs/scope-t/in.jpg").read() == SEEDS["inputs/scope-t/in.jpg"]
    # Its keys administer nothing: no new users, no wider policy.
    thief = as_user(s3_server, keys)
    with pytest.raises(S3AccessError, match="AccessDenied"):
        thief._call("CreateUser", UserName="evil")
    with pytest.raises(S3AccessError, match="AccessDenied"):
        thief._call("AttachUserPolicy", UserName="gpu-host-7",
                    PolicyArn=f"arn:aws:iam:::policy/{policy_name(s3_server.bucket, 'edge')}")
    # SeaweedFS lets a user mint more keys for itself (AWS's self-service rule): same scope, revoked with it.
    minted = thief._call("CreateAccessKey", UserName="gpu-host-7")
    second = client(s3_server, S3Keys(minted.findtext(".//AccessKeyId") or "",
                                      minted.findtext(".//SecretAccessKey") or "").env())
    assert refused(lambda: second.get_object(s3_server.bucket, "outputs/scope-t/out.jpg"))
    assert len(next(i for i in access.list() if i.name == "gpu-host-7").access_keys) == 2

    started = time.monotonic()
    assert access.delete("gpu-host-7") is True
    assert time.monotonic() - started < 5
    with pytest.raises(S3Error) as e:
        worker.get_object(s3_server.bucket, "inputs/scope-t/in.jpg")
    assert e.value.code == "InvalidAccessKeyId"
    assert refused(lambda: worker.put_object(s3_server.bucket, "outputs/scope-t/late.jpg", io.BytesIO(b"x"), 1))
    with pytest.raises(S3Error) as e:
        second.get_object(s3_server.bucket, "inputs/scope-t/in.jpg")
    assert e.value.code == "InvalidAccessKeyId"
    assert all(i.name != "gpu-host-7" for i in access.list())
    assert access.delete("gpu-host-7") is False
    # The others carry on.
    edge = client(s3_server, s3_server.env("edge"))
    assert edge.get_object(s3_server.bucket, "uploads/scope-t/up.jpg").read() == SEEDS["uploads/scope-t/up.jpg"]


def test_creating_again_rekeys_and_the_same_keys_survive(s3_server: EmbeddedS3, seeded: Minio) -> None:
    """Re-issuing a host's keys voids the old ones; ensuring the keys it holds (a restart) keeps them
    and drops any it minted for itself."""
    access, bucket, key = s3_server.access(), s3_server.bucket, "inputs/scope-t/in.jpg"
    first = access.create("gpu-host-8", "enhancer")
    second = access.create("gpu-host-8", "enhancer")
    assert refused(lambda: client(s3_server, first.env()).get_object(bucket, key))
    minted = as_user(s3_server, second)._call("CreateAccessKey", UserName="gpu-host-8")
    third = S3Keys(minted.findtext(".//AccessKeyId") or "", minted.findtext(".//SecretAccessKey") or "")
    assert access.create("gpu-host-8", "enhancer", second) == second
    assert client(s3_server, second.env()).get_object(bucket, key).read() == SEEDS[key]
    assert refused(lambda: client(s3_server, third.env()).get_object(bucket, key))
    assert access.delete("gpu-host-8")


def test_a_name_keeps_its_role(s3_server: EmbeddedS3) -> None:
    access = s3_server.access()
    with pytest.raises(Exception, match="edge role"):
        access.create("edge", "enhancer")
    with pytest.raises(ValueError, match="no S3 scope"):
        access.create("ledger-1", "billing")
    with pytest.raises(ValueError, match="identity name"):
        access.create("../x", "enhancer")


# --- the policies as data (what MinIO is given too) ------------------------------------------------
def test_policy_documents_grant_exactly_the_scopes() -> None:
    enhancer = policy_document("photos", "enhancer")
    assert enhancer == {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::photos/inputs/*"]},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["arn:aws:s3:::photos/outputs/*"]}]}
    edge = policy_document("photos", "edge")["Statement"]
    actions = {s["Action"][0]: s for s in edge}
    assert set(actions) == {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"}
    assert actions["s3:DeleteObject"]["Resource"] == [f"arn:aws:s3:::photos/{p}/*" for p in ("uploads", "inputs",
                                                                                                "outputs")]
    assert actions["s3:ListBucket"] == {"Effect": "Allow", "Action": ["s3:ListBucket"],
                                        "Resource": ["arn:aws:s3:::photos"],
                                        "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}}}
    for doc in (enhancer["Statement"], edge):
        for statement in doc:
            assert statement["Effect"] == "Allow" and "*" not in statement["Action"][0]
            assert all(r.startswith("arn:aws:s3:::photos") for r in statement["Resource"])
    assert SCOPES["billing"] == ()
    with pytest.raises(ValueError):
        policy_document("photos", "admin")


class FakeMinioAdmin:
    """Records ``MinioAdmin`` calls; users as ``user_list`` returns them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.users: dict[str, dict[str, str]] = {}

    def policy_add(self, name: str, policy: dict[str, Any]) -> str:
        self.calls.append(("policy_add", name, json.dumps(policy, sort_keys=True)))
        return ""

    def user_list(self) -> str:
        return json.dumps(self.users)

    def user_add(self, access_key: str, secret_key: str) -> str:
        self.calls.append(("user_add", access_key))
        self.users.setdefault(access_key, {"status": "enabled"})
        return ""

    def attach_policy(self, policies: list[str], user: str) -> str:
        self.calls.append(("attach_policy", tuple(policies), user))
        self.users[user]["policyName"] = ",".join(policies)
        return ""

    def user_remove(self, access_key: str) -> str:
        self.calls.append(("user_remove", access_key))
        del self.users[access_key]
        return ""


def test_minio_users_and_policies_from_the_same_scopes() -> None:
    admin = FakeMinioAdmin()
    access = MinioAccess(S3Settings(access_key="root", secret_key="rootsecret", bucket="photos"),
                         admin=admin)  # type: ignore[arg-type]
    access.ensure_policies()
    assert admin.calls == [("policy_add", "photos-enhancer", json.dumps(policy_document("photos", "enhancer"),
                                                                        sort_keys=True)),
                           ("policy_add", "photos-edge", json.dumps(policy_document("photos", "edge"), sort_keys=True))]
    keys = access.create("gpu-1", "enhancer")
    assert keys.access_key == "gpu-1" and len(keys.secret_key) >= 32
    assert admin.calls[-2:] == [("user_add", "gpu-1"), ("attach_policy", ("photos-enhancer",), "gpu-1")]
    admin.users["someone"] = {"policyName": "readwrite"}  # not ours: not listed
    assert access.list() == [S3Identity("gpu-1", "enhancer", ("gpu-1",))]
    with pytest.raises(Exception, match="enhancer role"):
        access.create("gpu-1", "edge")
    assert access.delete("gpu-1") is True and access.delete("gpu-1") is False
    assert access.list() == []


# --- S3 calls are bounded in time, and an oversized object is refused unread ----------------------
class StubS3:
    """A TCP server standing in for a broken S3: it never answers (``hang``), or it promises a huge body
    and sends a few bytes of it, then stalls (``huge``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "huge":
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000000\r\n\r\n"
                             + b"\xff\xd8" * 8)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[StubS3]:
    s = StubS3(request.param)
    yield s
    s.close()


@pytest.mark.parametrize("stub", ["hang"], indirect=True)
async def test_a_hung_s3_fails_the_call_within_its_timeouts(stub: StubS3) -> None:
    store = ObjectStore(S3Settings(endpoint=f"http://127.0.0.1:{stub.port}", access_key="k", secret_key="s",
                                   read_timeout=0.5, retries=1))
    started = time.monotonic()
    with pytest.raises(StorageError, match="unreachable"):
        await asyncio.wait_for(store.get_bytes("inputs/t/x.jpg"), 30)
    # one try and one retry of 0.5 s each, plus back-off: nowhere near the SDK's 5-minute default
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("stub", ["huge"], indirect=True)
async def test_an_oversized_object_is_refused_before_its_body_is_read(stub: StubS3) -> None:
    store = ObjectStore(S3Settings(endpoint=f"http://127.0.0.1:{stub.port}", access_key="k", secret_key="s",
                                   read_timeout=10, retries=0))
    started = time.monotonic()
    with pytest.raises(ObjectTooLarge) as e:
        await store.get_bytes("inputs/t/x.jpg", max_bytes=50 * 1024 * 1024)
    # Reading the body would have waited for the stalled stream (10 s read timeout).
    assert time.monotonic() - started < 3
    assert e.value.size == 1_000_000_000 and isinstance(e.value, ObjectMissing)  # permanent, like a missing one


async def test_size_checked_read_on_the_real_server(s3_server: EmbeddedS3, seeded: Minio) -> None:
    keys = s3_server.env("enhancer")
    store = ObjectStore(S3Settings(endpoint=s3_server.endpoint, bucket=s3_server.bucket,
                                   access_key=keys["S3_ACCESS_KEY"], secret_key=keys["S3_SECRET_KEY"]))
    data = SEEDS["inputs/scope-t/in.jpg"]
    assert await store.get_bytes("inputs/scope-t/in.jpg", max_bytes=len(data)) == data
    with pytest.raises(ObjectTooLarge):
        await store.get_bytes("inputs/scope-t/in.jpg", max_bytes=len(data) - 1)
    await store.ping()  # the enhancer may not read the probe key: still a verified answer

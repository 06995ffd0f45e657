"""Who may do what in S3: each role's scope on the bucket, and identities that hold exactly that.

No service holds the root keys (they stay with bootstrap and the operator). Every role's scope is
data (``SCOPES``), rendered once as an AWS-style policy document (``policy_document``) that both
servers enforce with S3's own fine-grained actions — ``s3:PutObject`` does not imply
``s3:DeleteObject``, unlike SeaweedFS's legacy ``Write`` action, which is why managed policies are used
rather than ``-s3.config`` action lists:

- **SeaweedFS** (``make run``, tests): its IAM API, served on the S3 port (``weed mini
  -s3.iam.readOnly=false``), creates users with keys and attaches a managed policy. The S3 server
  applies each change at once, with no restart; identities persist in the filer (``/etc/iam``).
- **MinIO** (compose): ``minio.MinioAdmin`` adds a canned policy per role and one user per identity
  (the access key is the identity's name).

``create(name, role)`` / ``delete(name)`` / ``list()`` are what ``photoenhance credentials`` uses to give
one GPU host its own S3 keys and to revoke them on the live system.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import urllib.parse
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import urllib3
from minio import MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException

from bus.settings import S3Settings
from bus.storage import http_client, sigv4_signature


@dataclass(frozen=True)
class Grant:
    """One S3 action allowed on the objects under some key prefixes (``s3:ListBucket``: listing them)."""

    action: str
    prefixes: tuple[str, ...]


#: Each role's scope on the bucket. Enhancers read inputs and write outputs, nothing else. The edge
#: writes inputs (checked uploads) and staging objects (presigned PUTs are signed with its keys), reads
#: staging objects and outputs (downloads), deletes and lists staging objects only (its janitor).
#: Billing touches no object. The admin (root) is not a role here: bootstrap alone uses it.
SCOPES: dict[str, tuple[Grant, ...]] = {
    "enhancer": (
        Grant("s3:GetObject", ("inputs/",)),
        Grant("s3:PutObject", ("outputs/",)),
    ),
    "edge": (
        Grant("s3:PutObject", ("inputs/", "uploads/")),
        Grant("s3:GetObject", ("uploads/", "outputs/")),
        # uploads/: staging never processed; inputs/ and outputs/: a person deleting their photo (DELETE task).
        Grant("s3:DeleteObject", ("uploads/", "inputs/", "outputs/")),
        Grant("s3:ListBucket", ("uploads/",)),
    ),
    "billing": (),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


class S3AccessError(RuntimeError):
    """The storage's admin API refused or failed; the message says what and why."""


@dataclass(frozen=True)
class S3Keys:
    """An identity's own S3 keys."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls, access_key: str | None = None) -> S3Keys:
        return cls(access_key or "PE" + secrets.token_hex(10).upper(), secrets.token_urlsafe(30))

    def env(self) -> dict[str, str]:
        return {"S3_ACCESS_KEY": self.access_key, "S3_SECRET_KEY": self.secret_key}


@dataclass(frozen=True)
class S3Identity:
    """One holder of S3 keys, as ``list()`` reports it (never the secrets)."""

    name: str
    role: str
    access_keys: tuple[str, ...]


def policy_name(bucket: str, role: str) -> str:
    """One managed policy per role and bucket (two deployments may share one server)."""
    return f"{bucket}-{role}"


def policy_document(bucket: str, role: str) -> dict[str, Any]:
    """``role``'s scope as an AWS IAM policy (the one form SeaweedFS and MinIO both enforce)."""
    if role not in SCOPES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(SCOPES)}")
    statements: list[dict[str, Any]] = []
    for grant in SCOPES[role]:
        if grant.action == "s3:ListBucket":
            statements.append({"Effect": "Allow", "Action": [grant.action], "Resource": [f"arn:aws:s3:::{bucket}"],
                               "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in grant.prefixes]}}})
        else:
            statements.append({"Effect": "Allow", "Action": [grant.action],
                               "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in grant.prefixes]})
    return {"Version": "2012-10-17", "Statement": statements}


def _check(name: str, role: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"identity name {name!r}: 3 to 64 letters, digits, '-' or '_', "
                         "starting with a letter or digit")
    if role not in SCOPES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(SCOPES)}")
    if not SCOPES[role]:
        raise ValueError(f"the {role} role has no S3 scope, so it gets no S3 keys")


class S3Access(ABC):
    """Per-identity S3 keys, each limited to its role's scope on one bucket; used with admin keys."""

    def __init__(self, settings: S3Settings) -> None:
        if not settings.access_key or not settings.secret_key:
            raise S3AccessError("managing S3 identities needs the storage's admin keys")
        self.settings = settings
        self.bucket = settings.bucket

    def ensure_policies(self) -> None:
        """Create or update every role's policy (idempotent; bootstrap runs it at each start)."""
        for role, grants in SCOPES.items():
            if grants:
                self._put_policy(policy_name(self.bucket, role), policy_document(self.bucket, role))

    @abstractmethod
    def _put_policy(self, name: str, document: dict[str, Any]) -> None: ...

    @abstractmethod
    def create(self, name: str, role: str, keys: S3Keys | None = None) -> S3Keys:
        """Give ``name`` its own keys within ``role``'s scope and return them. An existing ``name`` is
        re-keyed: every other key of it stops working. Given ``keys`` whose access key it holds already
        are kept as they are (so a restart does not disturb the services using them)."""

    @abstractmethod
    def delete(self, name: str) -> bool:
        """Revoke ``name``: its keys stop working at once. False when there was no such identity."""

    @abstractmethod
    def list(self) -> list[S3Identity]:
        """Every identity holding one of our roles (admin users are not listed)."""


class SeaweedAccess(S3Access):
    """SeaweedFS through its IAM API on the S3 port (needs ``weed … -s3.iam.readOnly=false``)."""

    def __init__(self, settings: S3Settings) -> None:
        super().__init__(settings)
        self._http = http_client(settings)

    def _call(self, action: str, **params: str) -> ET.Element:
        body = urllib.parse.urlencode({"Action": action, "Version": "2010-05-08", **params}).encode()
        url = urllib.parse.urlsplit(self.settings.endpoint)
        amz_date = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "host": url.netloc,
                   "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(["POST", "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                               payload_hash])
        region = self.settings.region
        signature = sigv4_signature(str(self.settings.secret_key), amz_date, region, "iam", canonical)
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.settings.access_key}/{amz_date[:8]}/"
                                    f"{region}/iam/aws4_request, SignedHeaders={signed}, Signature={signature}")
        del headers["host"]
        try:
            resp = self._http.request("POST", f"{url.scheme}://{url.netloc}/", body=body, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise S3AccessError(f"the S3 server's IAM API is unreachable: {e}") from e
        try:
            root = ET.fromstring(resp.data or b"<empty/>")
        except ET.ParseError as e:
            raise S3AccessError(f"IAM {action}: HTTP {resp.status}, not an IAM answer: {resp.data[:200]!r}") from e
        for el in root.iter():
            el.tag = el.tag.rsplit("}", 1)[-1]
        if resp.status != 200:
            code = root.findtext(".//Code") or str(resp.status)
            raise _IamError(code, f"IAM {action}: {code}: {root.findtext('.//Message') or resp.data[:200]!r}")
        return root

    def _put_policy(self, name: str, document: dict[str, Any]) -> None:
        text = json.dumps(document)
        try:
            self._call("CreatePolicy", PolicyName=name, PolicyDocument=text)
        except _IamError as e:
            if e.code != "EntityAlreadyExists":
                raise
            self._call("CreatePolicyVersion", PolicyArn=_policy_arn(name), PolicyDocument=text, SetAsDefault="true")

    def _user(self, name: str) -> tuple[str | None, list[str]] | None:
        """``(role, access keys)`` of user ``name``; ``None`` when there is no such user."""
        try:
            attached = self._call("ListAttachedUserPolicies", UserName=name)
        except _IamError as e:
            if e.code == "NoSuchEntity":
                return None
            raise
        roles = [r for r in SCOPES if any(p.text == policy_name(self.bucket, r) for p in attached.iter("PolicyName"))]
        keys = [k.text or "" for k in self._call("ListAccessKeys", UserName=name).iter("AccessKeyId")]
        return (roles[0] if roles else None), keys

    def create(self, name: str, role: str, keys: S3Keys | None = None) -> S3Keys:
        _check(name, role)
        found = self._user(name)
        if found is None:
            self._call("CreateUser", UserName=name)
            found = (None, [])
        current_role, current_keys = found
        if current_role not in (None, role):
            raise S3AccessError(f"{name} already holds S3 keys of the {current_role} role; revoke it first")
        if current_role is None:
            self._call("AttachUserPolicy", UserName=name, PolicyArn=_policy_arn(policy_name(self.bucket, role)))
        if keys is None or keys.access_key not in current_keys:
            keys = keys or S3Keys.generate()
            self._call("CreateAccessKey", UserName=name, AccessKeyId=keys.access_key, SecretAccessKey=keys.secret_key)
        for old in current_keys:  # including keys it minted for itself (SeaweedFS lets a user do that)
            if old != keys.access_key:
                self._call("DeleteAccessKey", UserName=name, AccessKeyId=old)
        return keys

    def delete(self, name: str) -> bool:
        found = self._user(name)
        if found is None:
            return False
        role, access_keys = found
        for key in access_keys:
            self._call("DeleteAccessKey", UserName=name, AccessKeyId=key)
        if role is not None:
            self._call("DetachUserPolicy", UserName=name, PolicyArn=_policy_arn(policy_name(self.bucket, role)))
        self._call("DeleteUser", UserName=name)
        return True

    def list(self) -> list[S3Identity]:
        found = []
        for user in self._call("ListUsers").iter("UserName"):
            name = user.text or ""
            info = self._user(name)
            if info is not None and info[0] is not None:
                found.append(S3Identity(name=name, role=info[0], access_keys=tuple(info[1])))
        return sorted(found, key=lambda i: i.name)


class _IamError(S3AccessError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _policy_arn(name: str) -> str:
    return f"arn:aws:iam:::policy/{name}"


class MinioAccess(S3Access):
    """MinIO through ``minio.MinioAdmin``: a canned policy per role, one user per identity, whose
    access key is the identity's name."""

    def __init__(self, settings: S3Settings, admin: MinioAdmin | None = None) -> None:
        super().__init__(settings)
        url = urllib.parse.urlsplit(settings.endpoint)
        self.admin = admin or MinioAdmin(
            endpoint=url.netloc, credentials=StaticProvider(str(settings.access_key), str(settings.secret_key)),
            region=settings.region, secure=url.scheme == "https", http_client=http_client(settings))

    def _put_policy(self, name: str, document: dict[str, Any]) -> None:
        self.admin.policy_add(name, policy=document)  # replaces an existing policy of that name

    def _users(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.admin.user_list() or "{}")

    def create(self, name: str, role: str, keys: S3Keys | None = None) -> S3Keys:
        _check(name, role)
        if keys is not None and keys.access_key != name:
            raise ValueError("on MinIO an identity's access key is its name")
        current = self._users().get(name)
        current_role = _role_of(self.bucket, (current or {}).get("policyName"))
        if current is not None and current_role not in (None, role):
            raise S3AccessError(f"{name} already holds S3 keys of the {current_role} role; revoke it first")
        keys = keys or S3Keys.generate(name)
        self.admin.user_add(name, keys.secret_key)  # re-keys an existing user
        if current_role is None:
            try:
                self.admin.attach_policy([policy_name(self.bucket, role)], user=name)
            except MinioAdminException as e:  # attached already: what we want
                if "already" not in str(e).lower():
                    raise S3AccessError(f"MinIO refused to attach the {role} policy to {name}: {e}") from e
        return keys

    def delete(self, name: str) -> bool:
        if name not in self._users():
            return False
        self.admin.user_remove(name)
        return True

    def list(self) -> list[S3Identity]:
        found = [S3Identity(name=name, role=role, access_keys=(name,))
                 for name, info in self._users().items()
                 if (role := _role_of(self.bucket, info.get("policyName"))) is not None]
        return sorted(found, key=lambda i: i.name)


def _role_of(bucket: str, policies: str | None) -> str | None:
    """Our role among a MinIO user's comma-separated policy names."""
    names = {p.strip() for p in (policies or "").split(",")}
    return next((r for r in SCOPES if policy_name(bucket, r) in names), None)


def open_access(settings: S3Settings, kind: str) -> S3Access:
    """``kind`` is ``seaweedfs`` (embedded) or ``minio`` (compose)."""
    if kind == "seaweedfs":
        return SeaweedAccess(settings)
    if kind == "minio":
        return MinioAccess(settings)
    raise ValueError(f"unknown S3 server kind {kind!r} (seaweedfs or minio)")


def bootstrap_identities(access: S3Access, keys: dict[str, S3Keys] | None = None) -> dict[str, S3Keys]:
    """The service roles' policies and identities (``edge``, ``enhancer``), named after their role;
    returns each role's keys (given ones are kept, so a rerun changes nothing)."""
    access.ensure_policies()
    keys = keys or {}
    return {role: access.create(role, role, keys.get(role)) for role, grants in SCOPES.items() if grants}

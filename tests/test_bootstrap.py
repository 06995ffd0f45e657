"""``photoenhance bootstrap``'s storage half, as compose runs it: each service role gets S3 keys of its
own, written for its ``--env-file``, limited to its scope, and kept when bootstrap runs again."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from photoenhance.bootstrap import storage_identities
from photoenhance.credentials import load_env_file
from photoenhance.servers import EmbeddedS3


def test_each_role_gets_its_own_scoped_keys_and_a_rerun_keeps_them(tmp_path: Path) -> None:
    with EmbeddedS3(tmp_path / "s3") as s3:
        written = storage_identities(s3.access(), tmp_path / "identity" / "s3")
        assert sorted(written) == ["edge", "enhancer"]
        env = {role: load_env_file(path) for role, path in written.items()}
        for path in written.values():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert env["edge"]["S3_ACCESS_KEY"] != env["enhancer"]["S3_ACCESS_KEY"] != s3.access_key

        def client(role: str) -> Minio:
            return Minio(s3.endpoint.removeprefix("http://"), access_key=env[role]["S3_ACCESS_KEY"],
                         secret_key=env[role]["S3_SECRET_KEY"], secure=False, region="us-east-1")

        client("edge").put_object(s3.bucket, "inputs/t1/photo.jpg", io.BytesIO(b"x"), 1)
        with pytest.raises(S3Error):  # an enhancer writes outputs, never inputs
            client("enhancer").put_object(s3.bucket, "inputs/t1/photo.jpg", io.BytesIO(b"y"), 1)
        assert client("enhancer").get_object(s3.bucket, "inputs/t1/photo.jpg").read() == b"x"

        again = storage_identities(s3.access(), tmp_path / "identity" / "s3")  # the next `docker compose up`
        assert {role: load_env_file(path) for role, path in again.items()} == env
        # The running services' keys still work.
        client("edge").put_object(s3.bucket, "inputs/t2/photo.jpg", io.BytesIO(b"z"), 1)
        assert client("enhancer").get_object(s3.bucket, "inputs/t2/photo.jpg").read() == b"z"

"""A real S3 API over HTTP on loopback for tests and benchmarks: moto's server, as a process.

Authentication is on (``INITIAL_NO_AUTH_ACTION_COUNT``): the first three calls, unsigned, make an
IAM user with full rights and its access key, and every call after them must be signed with that
key, so wrong credentials fail as they would on AWS. The nodes get the key and the endpoint the way
the AWS SDKs read them (:attr:`S3Server.env`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kvnode.testing.processes import free_port, wait_for

REGION = "us-east-1"
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class S3Server:
    """``with S3Server(log) as s3``: moto on a free loopback port, with one user's credentials."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    def _client(self, service: str, key_id: str = "setup", secret: str = "setup") -> Any:
        import boto3  # a dev dependency (moto's), imported only where a test needs it

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=REGION,
        )

    def __enter__(self) -> S3Server:
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"INITIAL_NO_AUTH_ACTION_COUNT": "3", "PATH": "/usr/bin:/bin"},
            )
        wait_for(self._answers, 30, f"moto's S3 server on {self.endpoint}")
        iam = self._client("iam")
        iam.create_user(UserName="kvstore")
        iam.put_user_policy(UserName="kvstore", PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL))
        key = iam.create_access_key(UserName="kvstore")["AccessKey"]
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_REGION": REGION,
        }
        return self

    def _answers(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as response:
            return bool(response.status == 200)

    def s3(self) -> Any:
        """A boto3 S3 client with the user's credentials (to make buckets and to tamper)."""
        return self._client("s3", self.env["AWS_ACCESS_KEY_ID"], self.env["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        """Make a bucket; returns its URL."""
        self.s3().create_bucket(Bucket=name)
        return f"s3://{name}"

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)

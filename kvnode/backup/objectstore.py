"""An object-store bucket for backups, through obstore: ``s3://bucket/prefix`` (and ``gs://``,
``az://``, which obstore serves with the same calls).

Credentials and the endpoint come from the environment, as the AWS SDKs read them
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_WEB_IDENTITY_TOKEN_FILE`` with ``AWS_ROLE_ARN``), so the node needs no flag of
its own for them. Every call is blocking: the backup code runs them in a thread.

The store's errors become the node's: a missing bucket and refused credentials are
FAILED_PRECONDITION (the node's settings must change), a missing object NOT_FOUND, anything else
(a network failure, a 5xx after obstore's retries) UNAVAILABLE, each with the store's error code.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import from_url

from kvnode.core.errors import FailedPrecondition, InvalidArgument, KVError, NotFound, Unavailable

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

SCHEMES = ("s3", "gs", "az")
WRITE_BUFFER = 8 << 20
"""Bytes of one multipart part; with :data:`WRITE_PARTS` parts in flight this bounds the memory an
upload holds."""
WRITE_PARTS = 2
READ_CHUNK = 1 << 20
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken"}
)
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


def is_url(location: str) -> bool:
    """Whether a backup location names a bucket rather than a folder."""
    return urlsplit(location).scheme in SCHEMES


def _store_error(exc: Exception, what: str, bucket: str) -> KVError:
    text = str(exc)
    found = _CODE.search(text)
    code = found.group(1) if found else type(exc).__name__
    if code == "NoSuchBucket":
        return FailedPrecondition(f"bucket {bucket!r} does not exist ({what})")
    if code in _CREDENTIAL_CODES or isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return FailedPrecondition(
            f"the object store refused this node's credentials for bucket {bucket!r} ({code}, {what}); "
            "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or the web identity"
        )
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"no object {what}")
    first_line = text.splitlines()[0] if text else code
    return Unavailable(f"object store error {what}: {first_line[:300]}")


class Bucket:
    """A bucket and a prefix in it; object names are relative to the prefix."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise InvalidArgument(f"invalid object-store URL {url!r}: use s3://BUCKET/PREFIX")
        self.url = url.rstrip("/")
        self.name = parts.netloc
        self._prefix = parts.path.strip("/")
        options: ClientConfig = {
            "timeout": timedelta(seconds=120),
            "connect_timeout": timedelta(seconds=10),
            "allow_http": os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"),
        }
        retries: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
        try:
            self._store = from_url(
                f"{parts.scheme}://{parts.netloc}",
                client_options=options,
                retry_config=retries,
            )
        except BaseError as exc:
            raise InvalidArgument(f"cannot use {url!r}: {exc}") from None

    def _path(self, name: str) -> str:
        return f"{self._prefix}/{name}" if self._prefix else name

    def url_of(self, name: str) -> str:
        return f"{self.url}/{name}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BaseError, OSError) as exc:
            raise _store_error(exc, what, self.name) from None

    def put(self, name: str, data: bytes) -> None:
        with self._errors(f"writing {self.url_of(name)}"):
            obstore.put(self._store, self._path(name), data)

    def get(self, name: str) -> bytes:
        with self._errors(f"reading {self.url_of(name)}"):
            return bytes(obstore.get(self._store, self._path(name)).bytes())

    def stream(self, name: str) -> Iterator[bytes]:
        """The object's bytes in chunks of about :data:`READ_CHUNK`, read as they are consumed."""
        with self._errors(f"reading {self.url_of(name)}"):
            result = obstore.get(self._store, self._path(name))
            for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[Writable]:
        """A multipart upload: what is written goes out in parts while it is written. The object
        appears only when the block ends without an error; otherwise the upload is aborted."""
        with (
            self._errors(f"writing {self.url_of(name)}"),
            obstore.open_writer(
                self._store, self._path(name), buffer_size=WRITE_BUFFER, max_concurrency=WRITE_PARTS
            ) as out,
        ):
            yield out

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: name (relative to the bucket's prefix) and size."""
        root = self._path(prefix)
        with self._errors(f"listing {self.url_of(prefix)}"):
            found = {}
            for batch in obstore.list(self._store, root or None):
                for meta in batch:
                    found[meta["path"][len(self._prefix) + 1 if self._prefix else 0 :]] = meta["size"]
            return found

    def delete(self, names: list[str]) -> None:
        with self._errors(f"deleting under {self.url}"):
            obstore.delete(self._store, [self._path(n) for n in names])

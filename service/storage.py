"""The artifact store: a local-disk object store with S3's shape — objects by key, multipart uploads and
presigned URLs — and the node-local cache tier in front of it.

Every operation the Tuist doc measures goes through ``telemetry``'s storage recorder (``Storage.operation``),
so its duration and count land in the documented families. The store's HTTP side (what an S3 server does when
a presigned URL is used: serve an object, accept a part) is ``read``/``write_part``, served by the app under
``/_store``; the service itself fetches remote hits from there over HTTP with an instrumented httpx client.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlencode

from telemetry.recorders import Storage

STORE_PREFIX = "/_store"
_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_SLUG = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
MAX_PARTS = 10_000


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise StoreError(400, f"invalid object key {key!r}")
    return key


def check_upload_id(upload_id: str) -> str:
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise StoreError(400, f"invalid upload id {upload_id!r}")
    return upload_id


def check_part_number(part_number: int) -> int:
    if isinstance(part_number, bool) or not isinstance(part_number, int) or not 1 <= part_number <= MAX_PARTS:
        raise StoreError(400, f"part_number must be from 1 to {MAX_PARTS}, got {part_number!r}")
    return part_number


class ArtifactStore:
    """Objects under ``root/objects``, multipart uploads under ``root/uploads``."""

    def __init__(self, root: Path, *, base_url: str, storage: Storage, secret: bytes | None = None,
                 url_ttl_seconds: int = 600) -> None:
        self.root = root
        self.objects = root / "objects"
        self.uploads = root / "uploads"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._storage = storage
        self._secret = secret or secrets.token_bytes(32)
        self._ttl = url_ttl_seconds

    # -- the operations the doc measures -----------------------------------------------------------------
    def object_size(self, key: str) -> int:
        with self._storage.operation("get_object_size", object_key=key) as op:
            size = self._path(key).stat().st_size if self._path(key).is_file() else None
            if size is None:
                raise StoreError(404, f"no object {key!r}")
            op.size_bytes = size
            return size

    def exists(self, key: str) -> bool:
        with self._storage.operation("check_object_existence", object_key=key):
            return self._path(key).is_file()

    def get_as_string(self, key: str) -> str:
        with self._storage.operation("get_object_as_string", object_key=key):
            try:
                return self._path(key).read_text("utf-8")
            except FileNotFoundError:
                raise StoreError(404, f"no object {key!r}") from None

    def presign_download(self, key: str) -> str:
        with self._storage.operation("generate_download_presigned_url", object_key=key):
            check_key(key)
            return self._url("GET", key, {})

    def start_multipart(self, key: str) -> str:
        with self._storage.operation("multipart_start_upload", object_key=key):
            check_key(key)
            upload_id = uuid.uuid4().hex
            directory = self.uploads / upload_id
            directory.mkdir()
            (directory / "key").write_text(key)
            return upload_id

    def presign_part(self, key: str, upload_id: str, part_number: int) -> str:
        # Checked before the operation is recorded: its labels carry these client-given values.
        check_key(key)
        check_upload_id(upload_id)
        check_part_number(part_number)
        with self._storage.operation("multipart_generate_upload_part_presigned_url", object_key=key,
                                     part_number=part_number, upload_id=upload_id):
            self._upload(key, upload_id)
            return self._url("PUT", key, {"upload_id": upload_id, "part_number": str(part_number)})

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[int]) -> int:
        """Concatenate ``parts`` in order into the object; returns its size."""
        check_key(key)
        check_upload_id(upload_id)
        for n in parts:
            check_part_number(n)
        with self._storage.operation("multipart_complete_upload", object_key=key, upload_id=upload_id):
            directory = self._upload(key, upload_id)
            if not parts or list(parts) != sorted(set(parts)):
                raise StoreError(400, "parts must be a non-empty list of increasing part numbers")
            missing = [n for n in parts if not (directory / f"part-{n}").is_file()]
            if missing:
                raise StoreError(400, f"parts {missing} were never uploaded")
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{upload_id}")
            with tmp.open("wb") as out:
                for n in parts:
                    with (directory / f"part-{n}").open("rb") as part:
                        shutil.copyfileobj(part, out)
            os.replace(tmp, target)  # readers see the old object or the whole new one
            shutil.rmtree(directory, ignore_errors=True)
            return target.stat().st_size

    def delete_all(self, project_slug: str) -> int:
        """Delete every object of a project (``account/project``); returns how many there were."""
        with self._storage.operation("delete_all_objects", project_slug=project_slug):
            if not _SLUG.fullmatch(project_slug):
                raise StoreError(400, f"invalid project slug {project_slug!r}")
            directory = self.objects / project_slug
            count = sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
            # Rename first so concurrent readers never see a half-deleted tree, then remove.
            if directory.exists():
                doomed = self.root / f"deleting-{uuid.uuid4().hex}"
                os.replace(directory, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            return count

    # -- the store's HTTP side: what happens when a presigned URL is used -------------------------------
    def verify(self, method: str, key: str, query: Mapping[str, str]) -> None:
        """Raise ``StoreError`` (403) unless ``query`` carries a valid, unexpired signature for the request."""
        check_key(key)
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            raise StoreError(403, "missing or malformed expires") from None
        if expires < time.time():
            raise StoreError(403, "the presigned URL has expired")
        extra = {k: query[k] for k in ("upload_id", "part_number") if k in query}
        expected = self._signature(method, key, expires, extra)
        # As bytes: compare_digest refuses non-ASCII text, and a client may send any (%C3%A9, %FF).
        given = query.get("signature", "").encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected.encode(), given):
            raise StoreError(403, "signature mismatch")

    def read(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise StoreError(404, f"no object {key!r}")
        return path

    def write_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> None:
        check_part_number(part_number)
        directory = self._upload(key, upload_id)
        tmp = directory / f".part-{part_number}.{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        os.replace(tmp, directory / f"part-{part_number}")

    # -- internals ----------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.objects / check_key(key)

    def _upload(self, key: str, upload_id: str) -> Path:
        directory = self.uploads / check_upload_id(upload_id)
        try:
            owner = (directory / "key").read_text()
        except FileNotFoundError:
            raise StoreError(404, f"no multipart upload {upload_id!r}") from None
        if owner != key:
            raise StoreError(400, f"upload {upload_id!r} belongs to another object")
        return directory

    def _url(self, method: str, key: str, extra: dict[str, str]) -> str:
        expires = int(time.time()) + self._ttl
        query = {**extra, "expires": str(expires), "signature": self._signature(method, key, expires, extra)}
        return f"{self.base_url}{STORE_PREFIX}/{key}?{urlencode(query)}"

    def _signature(self, method: str, key: str, expires: int, extra: Mapping[str, str]) -> str:
        message = "\n".join([method, key, str(expires), *(f"{k}={extra[k]}" for k in sorted(extra))])
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()


class NodeCache:
    """The node-local tier: the most recently used artifacts on this node's disk, bounded by count."""

    def __init__(self, root: Path, max_entries: int) -> None:
        self.root = root
        self.max_entries = max_entries
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.iterdir():  # an index lives in memory; start from an empty tier
            stale.unlink(missing_ok=True)
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def _file(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            if key not in self._lru:
                return None
            self._lru.move_to_end(key)
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            self.discard(key)
            return None

    def put(self, key: str, data: bytes) -> None:
        path = self._file(key)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        evicted: list[str] = []
        with self._lock:
            self._lru[key] = len(data)
            self._lru.move_to_end(key)
            while len(self._lru) > self.max_entries:
                evicted.append(self._lru.popitem(last=False)[0])
        for old in evicted:
            self._file(old).unlink(missing_ok=True)

    def discard(self, key: str) -> None:
        with self._lock:
            self._lru.pop(key, None)
        self._file(key).unlink(missing_ok=True)

    def discard_prefix(self, prefix: str) -> None:
        with self._lock:
            keys = [k for k in self._lru if k.startswith(prefix)]
        for key in keys:
            self.discard(key)

    def __len__(self) -> int:
        return len(self._lru)

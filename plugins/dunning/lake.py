"""The lake: Parquet snapshots and run artefacts under one root, on local disk or S3.

Core code takes the root as a path object (``upath.UPath`` here, ``ObjectStoragePath`` inside
Airflow: same interface), so the same functions write ``file://`` in tests and ``s3://`` in
production.  Tasks hand each other keys relative to the root, never frames.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from dunning.config import lake_url

LOCAL_PROTOCOLS = ("", "file", "local")
# The lake holds names, addresses and phone numbers: on local disk only its owner may read it.
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def private_dirs(folder: str) -> str:
    """``folder`` and any missing parents, created owner-only (``mkdir -p`` would give the
    missing parents the default, world-readable mode)."""
    missing = []
    here = os.path.abspath(folder)
    while not os.path.isdir(here):
        missing.append(here)
        here = os.path.dirname(here)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            os.mkdir(path, PRIVATE_DIR)
    return folder


def root(url: str | None = None) -> UPath:
    return UPath(url or lake_url())


def partition(area: str, as_of: date, **parts: str) -> str:
    """Hive-style keys (``area/as_of=.../source=...``) so engines like Athena read them as is."""
    return "/".join([area, f"as_of={as_of.isoformat()}", *(f"{k}={v}" for k, v in parts.items())])


def is_local(path: Any) -> bool:
    return getattr(path, "protocol", "") in LOCAL_PROTOCOLS


def write_bytes(path: Any, data: bytes, content_type: str | None = None, **put: str) -> None:
    """Readers never see half an object: S3 puts are atomic, local files are renamed into place.

    ``content_type`` matters for objects a browser opens (payment pages): S3 serves what the put
    declared, and without it a page downloads instead of rendering.  ``put``: further S3 put
    arguments (``ServerSideEncryption``, ``SSEKMSKeyId``); local files have no such thing.
    """
    if is_local(path):
        folder = private_dirs(path.parent.path)
        tmp = os.path.join(folder, f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path.path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if content_type or put:
        path.fs.pipe_file(
            path.path, data, **({"ContentType": content_type} if content_type else {}), **put
        )
    else:
        path.write_bytes(data)


def public_url(path: Any, expires_seconds: int) -> str:
    """A link a browser can open without credentials: a presigned GET on S3, the file URI on
    local disk (demo and tests)."""
    if is_local(path):
        return UPath(str(path)).as_uri() if hasattr(path, "as_uri") else f"file://{path.path}"
    return path.fs.url(path.path, expires=expires_seconds)


def write_parquet(path: Any, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression="zstd")
    write_bytes(path, buf.getvalue())


def read_parquet(path: Any) -> pd.DataFrame:
    with path.open("rb") as fh:
        return pd.read_parquet(fh)


def write_json(path: Any, obj: Any, **put: str) -> None:
    data = json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    write_bytes(path, data, "application/json" if put else None, **put)


def read_json(path: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def table_bytes(table: pa.Table) -> bytes:
    """An Arrow table as Parquet bytes (zstd), e.g. to write later with ``write_bytes``."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_table(
    path: Any, columns: list[str] | None = None, filters: pc.Expression | None = None
) -> pa.Table:
    """Parquet straight to Arrow, only ``columns`` and rows matching ``filters`` (row groups
    whose statistics rule them out are skipped): no pandas copy for readers that compute in
    Arrow or numpy."""
    with path.open("rb") as fh:
        return pq.read_table(fh, columns=columns, filters=filters)

"""Checkpoint payloads in a shared store (``git config flor.store <url>``), through fsspec.

Manifests travel with git; payloads (multi-GB tensors) do not, so that they
never go through zlib into packfiles. With a store configured, ``git flor push``
uploads every payload the store lacks and replay calls :func:`fetch_payload`
for one it needs and this clone lacks. Any fsspec URL works: ``file:///mnt/x``
(tested), ``s3://bucket/prefix`` (``pip install s3fs``), ``gs://…``.

Payloads are content-addressed: a payload file's path under
``$GIT_COMMON_DIR/flor/objects/``, slashes removed, is the sha256 of its bytes
(the layouts are :class:`~.checkpoints.PayloadStore`'s). The store mirrors those
relative paths, uploads land
under a temporary name and are renamed into place, and downloads are checked
against their name, so a half-written or corrupt payload is never used.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from ..errors import FlorError, UsageError
from .checkpoints import PayloadStore, is_payload_id, store_for
from .repo import common_dir


class PayloadMissing(FlorError):
    """A checkpoint payload is neither in this clone nor in the configured store."""

    exit_code = 1


def store_url(repo: pygit2.Repository) -> str | None:
    try:
        value = repo.config["flor.store"]
    except KeyError:
        return None
    return str(value).strip() or None


def _local(repo: pygit2.Repository) -> PayloadStore:
    return store_for(common_dir(repo))


def local_payloads(repo: pygit2.Repository) -> dict[str, Path]:
    """Every payload of this clone by its path relative to the objects dir (temp files excluded)."""
    return _local(repo).files()


def _open_store(url: str) -> tuple[Any, str]:
    import fsspec  # only sharing needs it; recording and the hooks never import it

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UsageError(
            f"cannot open checkpoint store {url!r} ({exc}); fix `git config flor.store` "
            "(e.g. file:///shared/flor or s3://bucket/prefix with s3fs installed)"
        ) from None
    return fs, root.rstrip("/")


@dataclass(frozen=True)
class Upload:
    uploaded: int
    present: int
    bytes: int


def push_payloads(repo: pygit2.Repository, url: str) -> Upload:
    """Upload every local payload the store lacks (one listing of the store, then only the missing)."""
    fs, root = _open_store(url)
    mine = local_payloads(repo)
    try:
        there = {p[len(root) + 1:] for p in fs.find(root)} if fs.exists(root) else set()
    except FileNotFoundError:
        there = set()
    missing = sorted(set(mine) - there)
    size = 0
    for rel in missing:
        target = f"{root}/{rel}"
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(mine[rel]), tmp)
        fs.mv(tmp, target)
        size += mine[rel].stat().st_size
    return Upload(uploaded=len(missing), present=len(mine) - len(missing), bytes=size)


def local_payload(repo: pygit2.Repository, sha: str) -> Path | None:
    return _local(repo).find(sha)


def fetch_payload(repo: pygit2.Repository, sha: str) -> Path:
    """The local path of payload ``sha``, downloading it from the store first when missing here."""
    sha = sha.lower()
    if not is_payload_id(sha):
        raise UsageError(f"{sha!r} is not a payload id (a sha256 in hex)")
    found = local_payload(repo, sha)
    if found is not None:
        return found
    url = store_url(repo)
    if url is None:
        raise PayloadMissing(
            f"checkpoint payload {sha[:12]} is not in this clone and no store is configured: "
            "set the store its author pushed to with `git config flor.store <url>`"
        )
    fs, root = _open_store(url)
    for rel in PayloadStore.relative_paths(sha):
        if fs.exists(f"{root}/{rel}"):
            break
    else:
        raise PayloadMissing(
            f"checkpoint payload {sha[:12]} is in neither this clone nor {url}: "
            "ask the run's author to `git flor push` (with flor.store set)"
        )
    dest = _local(repo).root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.download-{uuid.uuid4().hex[:8]}")
    try:
        fs.get_file(f"{root}/{rel}", str(tmp))
        digest = _sha256(tmp)
        if digest != sha:
            raise PayloadMissing(
                f"checkpoint payload {sha[:12]} in {url} is corrupt (its sha256 is {digest[:12]}); "
                "ask its author to `git flor push` again"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def read_payload(repo: pygit2.Repository, sha: str) -> bytes:
    """Payload ``sha``'s bytes, from this clone or else the store, checked against its name.

    What loading a model (``flor.load``, ``git flor ckpt export``) reads: a payload
    damaged on this disk is refused rather than handed over as a model.
    """
    data = fetch_payload(repo, sha).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha.lower():
        raise PayloadMissing(
            f"checkpoint payload {sha[:12]} in this clone is corrupt; delete "
            f"{local_payload(repo, sha)} to fetch it again from the store"
        )
    return data


def ensure_payloads(repo: pygit2.Repository, shas: Iterable[str]) -> int:
    """Make every payload in ``shas`` local (what replay calls before it restores); returns how many came down.

    Raises :class:`PayloadMissing` for the first one neither here nor in the store.
    """
    fetched = 0
    for sha in dict.fromkeys(shas):
        if local_payload(repo, sha) is None:
            fetch_payload(repo, sha)
            fetched += 1
    return fetched


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

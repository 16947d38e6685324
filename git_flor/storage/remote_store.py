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
        _put(fs, root, rel, mine[rel])
        size += mine[rel].stat().st_size
    return Upload(uploaded=len(missing), present=len(mine) - len(missing), bytes=size)


def _put(fs: Any, root: str, rel: str, path: Path) -> None:
    """Upload under a temporary name, then rename: a reader never sees half a payload."""
    target = f"{root}/{rel}"
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(path), tmp)
    fs.mv(tmp, target)


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
    rel = _in_store(fs, root, sha)
    if rel is None:
        raise PayloadMissing(
            f"checkpoint payload {sha[:12]} is in neither this clone nor {url}: "
            "ask the run's author to `git flor push` (with flor.store set)"
        )
    return _download(fs, root, rel, sha, _local(repo).root / rel, url)


def _in_store(fs: Any, root: str, sha: str) -> str | None:
    """The payload's path relative to the store root, or None when the store lacks it."""
    for rel in PayloadStore.relative_paths(sha):
        if fs.exists(f"{root}/{rel}"):
            return rel
    return None


def _download(fs: Any, root: str, rel: str, sha: str, dest: Path, url: str) -> Path:
    """Copy ``rel`` to ``dest`` through a temporary name, checked against its sha256 first."""
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


class Store:
    """A payload store opened once, for code without a repository: replay workers on other
    machines download from it, and the driver that sends them work uploads to it.

    Knows only the store's layout (the objects dir's relative paths), not the clone's.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _open_store(url)
        self._present: set[str] = set()

    def has(self, sha: str) -> bool:
        if sha not in self._present and _in_store(self.fs, self.root, sha) is not None:
            self._present.add(sha)
        return sha in self._present

    def upload(self, sha: str, path: Path) -> None:
        """Put the local payload ``path`` (whose sha256 is ``sha``) into the store, unless there."""
        if not self.has(sha):
            _put(self.fs, self.root, PayloadStore.relative_paths(sha)[0], path)
            self._present.add(sha)

    def download(self, sha: str, dest_root: Path) -> Path:
        """Payload ``sha`` under ``dest_root`` in a PayloadStore's layout, sha256-checked."""
        rel = _in_store(self.fs, self.root, sha)
        if rel is None:
            raise PayloadMissing(
                f"checkpoint payload {sha[:12]} is not in {self.url}: "
                "push it with `git flor push` from the clone that recorded the run"
            )
        return _download(self.fs, self.root, rel, sha, PayloadStore(dest_root).path(sha), self.url)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

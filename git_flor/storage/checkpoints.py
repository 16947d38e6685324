"""Checkpoint storage: payloads content-addressed on disk, manifests in git.

Payloads (model weights, optimizer state, RNG states, loop-carried variables)
can be gigabytes, so they never go through zlib into packfiles: each is a file
``$GIT_COMMON_DIR/flor/objects/<sha256[:2]>/<sha256[2:]>``, written to a temp
file and renamed into place (a half-written payload is never visible), stored
once however many iterations or runs produce the same bytes. What *is* in git
is the manifest, small enough to push and fetch: a tree with one folder per
checkpointed iteration holding one pointer blob per saved object (sha256, size,
serialiser), at ``<run-id[:2]>/<run-id>/`` in the tree of the recording clone's
``refs/flor/manifests/<clone-id>`` (one ref per clone, not per run, so sharing
costs what is new, not what is there). Repositories recorded before that have
one ``refs/flor/ckpt/<run-id>`` commit per run; those are still read.

No pygit2 at import: the runtime writes payloads from its background thread;
only manifests need the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .records import warn

if TYPE_CHECKING:
    import pygit2

OBJECTS_DIR = "objects"
ITER_META = "_iteration.json"
_HEX = frozenset("0123456789abcdef")


def is_payload_id(name: str) -> bool:
    """A payload's name is the sha256 of its bytes in lowercase hex."""
    return len(name) == 64 and set(name) <= _HEX


@dataclass(frozen=True)
class Pointer:
    """What a manifest says about one saved object of one iteration."""

    sha256: str
    size: int
    serializer: str
    kind: str  # "object" (registered), "var" (loop-carried variable), "rng"

    @classmethod
    def from_json(cls, data: object) -> Pointer:
        """Read a pointer; unknown keys (a newer git-flor's) are ignored, a wrong type is a ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint pointer is not a JSON object")
        sha, size, ser, kind = (data.get(k) for k in ("sha256", "size", "serializer", "kind"))
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise ValueError(f"checkpoint pointer sha256 {sha!r} is not a sha256")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise ValueError(f"checkpoint pointer size {size!r} is not a size")
        if not (isinstance(ser, str) and isinstance(kind, str)):
            raise ValueError("checkpoint pointer serializer/kind are not strings")
        return cls(sha, size, ser, kind)

    def to_json(self) -> str:
        return json.dumps(
            {"sha256": self.sha256, "size": self.size, "serializer": self.serializer, "kind": self.kind},
            sort_keys=True,
        )


class IterationCheckpoint(TypedDict, total=False):
    """A run's checkpoint at the end of one outer-loop iteration, as its manifest holds it."""

    loop: str  # the outer loop's name
    objects: dict[str, Pointer]  # saved object → its payload ("var:NAME" for carried variables)
    unsaved: list[str]  # state that could not be saved: not a safe resume point when non-empty
    seconds: float  # what saving took (replay's cost model reads it as the restore cost)


#: A run's checkpoints: outer-loop iteration → its checkpoint.
Manifest = dict[int, IterationCheckpoint]


class PayloadStore:
    """The content-addressed payload directory of one clone.

    The one place that knows where a payload lives: ``<root>/ab/cdef…`` (written),
    or flat ``<root>/abcdef…`` (accepted when read). A shared store
    (:mod:`.remote_store`) mirrors the same relative paths.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        """Where payload ``sha`` is written."""
        return self.root / sha[:2] / sha[2:]

    @staticmethod
    def relative_paths(sha: str) -> list[str]:
        """Where payload ``sha`` may be, relative to a store's root: fan-out first, then flat."""
        return [f"{sha[:2]}/{sha[2:]}", sha]

    def find(self, sha: str) -> Path | None:
        """The file of payload ``sha`` in this store, None when it is not here."""
        for rel in self.relative_paths(sha):
            if (self.root / rel).is_file():
                return self.root / rel
        return None

    def files(self) -> dict[str, Path]:
        """Every payload file by its path relative to the root, in either layout (temp files excluded)."""
        out: dict[str, Path] = {}
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                if is_payload_id(rel.replace("/", "")):
                    out[rel] = path
        return out

    def put(self, data: bytes | list[Any]) -> tuple[str, int]:
        """Store ``data`` (bytes, or a list of buffers) once; return (sha256, size).

        Atomic: temp file, then rename. No fsync: a killed process cannot leave a
        torn payload behind a rename, and after a power loss a torn one fails its
        sha256 check on read (replay then starts from an earlier checkpoint) — not
        worth milliseconds per checkpoint. Hashing and writing large buffers
        release the GIL, so a background writer barely slows training.
        """
        parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        digest = hashlib.sha256()
        size = 0
        for part in parts:
            digest.update(part)
            size += memoryview(part).nbytes
        sha = digest.hexdigest()
        final = self.path(sha)
        try:
            # Already stored: refresh its mtime, which is what `git flor gc` reads, so a
            # concurrent gc sees it as fresh and keeps it for the run about to reference it.
            os.utime(final)
            return sha, size
        except FileNotFoundError:
            pass
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for part in parts:
                    fh.write(part)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha, size

    def get(self, sha: str) -> bytes:
        data = self.path(sha).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise OSError(f"checkpoint payload {sha[:12]} is corrupt")
        return data

    def __iter__(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith(".tmp-"):
                        yield sub.name + f.name


def store_for(common_dir: Path) -> PayloadStore:
    return PayloadStore(common_dir / "flor" / OBJECTS_DIR)


# -- manifests (need the repository) ------------------------------------------------------


def manifest_path(run_id: str) -> tuple[str, str]:
    """Where a run's manifest sits in its clone's manifests tree: a two-character fan-out.

    With 100,000 runs a flat tree would be rewritten whole (megabytes) by every run;
    the fan-out bounds what one run writes to the root, one small folder and its own tree.
    """
    return run_id[:2], run_id


def manifest_tree(repo: pygit2.Repository, iterations: Manifest) -> pygit2.Oid:
    """The tree of one run's manifest: one folder per checkpointed iteration."""
    from pygit2.enums import FileMode

    root = repo.TreeBuilder()
    for i in sorted(iterations):
        entry = iterations[i]
        sub = repo.TreeBuilder()
        for name, ptr in sorted(entry["objects"].items()):
            sub.insert(_blob_name(name), repo.create_blob(ptr.to_json().encode()), FileMode.BLOB)
        meta = {k: v for k, v in entry.items() if k != "objects"}
        sub.insert(ITER_META, repo.create_blob(json.dumps(meta, sort_keys=True).encode()), FileMode.BLOB)
        root.insert(f"{i:08d}", sub.write(), FileMode.TREE)
    return root.write()


def put_manifests(
    repo: pygit2.Repository, manifests: dict[str, pygit2.Oid], message: str = "flor checkpoints"
) -> None:
    """Put run manifest trees into this clone's manifests ref: one commit, compare-and-swap.

    The commit's parent is the previous tip, so pushing it is a fast-forward and a
    fetch sends only the new trees. Only this clone writes its ref, and concurrent
    runs of the clone retry on the compare-and-swap, so none is lost.
    """
    import pygit2
    from pygit2.enums import FileMode

    from .refs import cas_update, manifests_ref
    from .repo import clone_id, signature

    sig = signature(repo)
    by_fan: dict[str, dict[str, pygit2.Oid]] = {}
    for run_id, tree in manifests.items():
        fan, name = manifest_path(run_id)
        by_fan.setdefault(fan, {})[name] = tree

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        base = repo[old].peel(pygit2.Tree) if old is not None else None
        root = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
        for fan, entries in by_fan.items():
            sub = base[fan] if base is not None and fan in base else None
            builder = repo.TreeBuilder(repo[sub.id]) if sub is not None and sub.type_str == "tree" \
                else repo.TreeBuilder()
            for name, tree in entries.items():
                builder.insert(name, tree, FileMode.TREE)
            root.insert(fan, builder.write(), FileMode.TREE)
        tree_id = root.write()
        if base is not None and tree_id == base.id:
            return old  # type: ignore[return-value]  # nothing new
        return repo.create_commit(None, sig, sig, f"{message}\n", tree_id, [old] if old else [])

    cas_update(repo, manifests_ref(clone_id(repo)), build)


def write_manifest(repo: pygit2.Repository, run_id: str, iterations: Manifest) -> None:
    """Record the run's checkpoints in this clone's manifests ref (the run's entry replaced whole).

    ``iterations`` maps iteration → {"objects": {name: Pointer}, "unsaved": [names], "loop": name}.
    """
    put_manifests(repo, {run_id: manifest_tree(repo, iterations)}, f"flor checkpoints of run {run_id}")


def _manifest_trees(repo: pygit2.Repository) -> list[tuple[str, pygit2.Tree]]:
    """Every clone's manifests tree (ref name, tree), this clone's first: its word on its runs stands."""
    import pygit2

    from .refs import MANIFESTS_PREFIX, manifests_ref
    from .repo import clone_id

    mine = manifests_ref(clone_id(repo))
    names = sorted((n for n in repo.references if n.startswith(MANIFESTS_PREFIX)), key=lambda n: n != mine)
    out = []
    for name in names:
        try:
            out.append((name, repo.references[name].peel(pygit2.Tree)))
        except (KeyError, ValueError, pygit2.GitError):
            warn(f"ignoring {name}: it does not point at a commit")
    return out


def own_manifest_ids(repo: pygit2.Repository) -> set[str]:
    """Runs whose manifest this clone's manifests ref holds (the ones it may rewrite)."""
    from .refs import manifests_ref
    from .repo import clone_id

    mine = manifests_ref(clone_id(repo))
    return {run for name, tree in _manifest_trees(repo) if name == mine for run in _tree_runs(repo, tree)}


def _tree_runs(repo: pygit2.Repository, tree: pygit2.Tree) -> list[str]:
    return [entry.name for fan in tree if fan.type_str == "tree" for entry in repo[fan.id]
            if entry.type_str == "tree"]


def _find_manifest(repo: pygit2.Repository, run_id: str) -> tuple[str, pygit2.Tree] | None:
    """(where, tree) of a run's manifest: a clone's manifests ref, else the run's legacy ref."""
    import pygit2

    from .refs import CKPT_PREFIX, manifests_ref
    from .repo import clone_id

    fan, name = manifest_path(run_id)
    mine = repo.references.get(manifests_ref(clone_id(repo)))
    # This clone's ref by name first (no listing of every ref for its own runs), then the others'.
    found = _in_tree(repo, mine.peel(pygit2.Tree), fan, name) if mine is not None else None
    if found is not None:
        return f"{mine.name}:{fan}/{name}", found
    for ref, tree in _manifest_trees(repo):
        hit = _in_tree(repo, tree, fan, name)
        if hit is not None:
            return f"{ref}:{fan}/{name}", hit
    legacy = repo.references.get(CKPT_PREFIX + run_id)
    if legacy is None:
        return None
    return legacy.name, repo[legacy.target].peel(pygit2.Tree)


def _in_tree(repo: pygit2.Repository, tree: pygit2.Tree, fan: str, name: str) -> pygit2.Tree | None:
    import pygit2

    if fan not in tree:
        return None
    sub = repo[tree[fan].id]
    if isinstance(sub, pygit2.Tree) and name in sub and sub[name].type_str == "tree":
        return repo[sub[name].id]
    return None


def read_manifest(repo: pygit2.Repository, run_id: str) -> Manifest:
    """Iteration → {"objects": {name: Pointer}, "unsaved": [...], ...}; empty when none."""
    found = _find_manifest(repo, run_id)
    if found is None:
        return {}
    where, tree = found
    out: Manifest = {}
    for entry in tree:
        if not entry.name.isdigit() or entry.type_str != "tree":
            continue
        try:
            out[int(entry.name)] = _read_iteration(repo, repo[entry.id])
        except (ValueError, TypeError, KeyError) as exc:
            # A checkpoint that cannot be read is not a resume point: replay plans around it.
            warn(f"ignoring checkpoint {entry.name} of run {run_id} ({where}): {exc}")
    return out


def _read_iteration(repo: pygit2.Repository, sub: pygit2.Tree) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    objects: dict[str, Pointer] = {}
    for blob in sub:
        data = json.loads(repo[blob.id].data)
        if blob.name == ITER_META:
            if not isinstance(data, dict):
                raise ValueError(f"{ITER_META} is not a JSON object")
            meta = {k: v for k, v in data.items() if k != "objects"}
        else:
            objects[_object_name(blob.name)] = Pointer.from_json(data)
    return {**meta, "objects": objects}


def run_ids_with_checkpoints(repo: pygit2.Repository) -> list[str]:
    """Every run with a manifest: in any clone's manifests ref or a legacy per-run ref."""
    from .refs import CKPT_PREFIX

    ids = {run for _, tree in _manifest_trees(repo) for run in _tree_runs(repo, tree)}
    ids.update(n[len(CKPT_PREFIX):] for n in repo.references if n.startswith(CKPT_PREFIX))
    return sorted(ids)


def _blob_name(name: str) -> str:
    """Object names may hold characters a tree entry cannot ('/'): escape them reversibly."""
    return name.replace("%", "%25").replace("/", "%2F")


def _object_name(blob: str) -> str:
    return blob.replace("%2F", "/").replace("%25", "%")

"""``git flor gc``: reclaim checkpoint space without ever losing a referenced payload."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import EXIT_OK, UsageError
from ..storage.checkpoints import (
    own_manifest_ids,
    read_manifest,
    run_ids_with_checkpoints,
    store_for,
    write_manifest,
)
from ..storage.index import connect, replayed_payloads
from ..storage.journal import JOURNAL_DIR, live_checkpoint_payloads
from ..storage.repo import common_dir, flor_dir
from ..storage.sharing import fold_legacy_manifests
from .common import open_session

#: Payloads younger than this are kept even when unreferenced: a live run may have
#: written one a moment before journaling it (git's gc.pruneExpire, in miniature).
GRACE_SECONDS = 3600.0


def gc(*, keep_every: int | None = None, dry_run: bool = False, fmt: str = "text") -> int:
    if keep_every is not None and keep_every < 1:
        raise UsageError("--keep-every must be a positive number of iterations, e.g. --keep-every 5")
    repo = open_session()
    store = store_for(common_dir(repo))
    keep_shas = live_checkpoint_payloads(flor_dir(repo) / JOURNAL_DIR)
    keep_shas |= replayed_payloads(connect(repo))  # files runs found and overwrote; what they loaded
    thinned: dict[str, list[int]] = {}
    if keep_every is not None and not dry_run:
        fold_legacy_manifests(repo)
    own = own_manifest_ids(repo) if keep_every is not None else set()
    for run_id in run_ids_with_checkpoints(repo):
        manifest = read_manifest(repo, run_id)
        # Only this clone's runs are thinned: another clone's manifest is its recorder's word.
        if keep_every is not None and manifest and run_id in own:
            first, last = min(manifest), max(manifest)
            kept = {i: e for i, e in manifest.items() if i in (first, last) or i % keep_every == 0}
            if len(kept) < len(manifest):
                thinned[run_id] = sorted(set(manifest) - set(kept))
                if not dry_run:
                    write_manifest(repo, run_id, kept)
                manifest = kept
        keep_shas |= {p.sha256 for entry in manifest.values() for p in entry["objects"].values()}
    doomed, freed, young = [], 0, 0
    for sha in store:
        if sha in keep_shas:
            continue
        path = store.path(sha)
        try:
            if _young(path):
                young += 1
                continue
            size = path.stat().st_size
            # Checked again right before deleting: a run may have just stored the same bytes
            # (put refreshes the mtime), and must find them when it writes its manifest.
            if not dry_run and not _young(path):
                path.unlink()
        except FileNotFoundError:
            continue
        doomed.append(sha)
        freed += size
    report = {"dry_run": dry_run, "deleted": doomed, "bytes": freed, "kept_recent": young,
              "thinned": {r: it for r, it in thinned.items()}}
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        verb = "would delete" if dry_run else "deleted"
        for run_id, dropped in thinned.items():
            print(f"run {run_id}: {'would drop' if dry_run else 'dropped'} checkpoints of iterations {dropped}")
        print(f"{verb} {len(doomed)} unreferenced checkpoint payload(s), {freed / 1e6:.1f} MB")
        if young:
            print(f"kept {young} unreferenced payload(s) written in the last hour (a running training "
                  "may be about to use them); `git flor gc` deletes them once they are older")
    return EXIT_OK


def _young(path: Path) -> bool:
    return time.time() - path.stat().st_mtime < GRACE_SECONDS

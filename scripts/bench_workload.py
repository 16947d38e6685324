"""What the benchmarks share: the training workload (a small numpy MLP trained with
minibatch SGD) and the helpers that pin the measured git-flor and find FlorDB.

Shared by scripts/bench_record.py and scripts/bench_replay.py so that both measure
the same script. ``MODEL`` expects ``np``, ``flor`` and the args ``hidden``,
``n_train``, ``seed``; ``LOOP`` is the training loop (``{decay}``: the factor ``lr``
is divided by when validation stalls, a plain loop-carried variable).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

MODEL = '''\
rng = np.random.default_rng(seed)
D, K = 64, 10
teacher = rng.normal(size=(D, K))
X = rng.normal(size=(n_train + 2000, D))
y = (X @ teacher + rng.normal(scale=2.0, size=(len(X), K))).argmax(axis=1)
X_train, y_train, X_val, y_val = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
W1 = rng.normal(scale=D**-0.5, size=(D, hidden))
b1 = np.zeros(hidden)
W2 = rng.normal(scale=hidden**-0.5, size=(hidden, K))
b2 = np.zeros(K)


def predict(x):
    h = np.maximum(x @ W1 + b1, 0.0)
    return h @ W2 + b2
'''

LOOP = '''\
with flor.checkpointing(W1=W1, b1=b1, W2=W2, b2=b2):
    for epoch in flor.loop("epoch", range(epochs)):
        order = rng.permutation(n_train)
        for step in flor.loop("step", range(n_train // batch)):
            idx = order[step * batch : (step + 1) * batch]
            xb, yb, rows = X_train[idx], y_train[idx], np.arange(len(idx))
            h = np.maximum(xb @ W1 + b1, 0.0)
            z = h @ W2 + b2
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            loss = -np.log(p[rows, yb]).mean()
            p[rows, yb] -= 1.0
            p /= len(idx)
            gh = p @ W2.T
            gh[h <= 0.0] = 0.0
            W2 -= lr * (h.T @ p)
            b2 -= lr * p.sum(axis=0)
            W1 -= lr * (xb.T @ gh)
            b1 -= lr * gh.sum(axis=0)
            flor.log("loss", loss)
        z = predict(X_val)
        z -= z.max(axis=1, keepdims=True)
        val_loss = float(np.log(np.exp(z).sum(axis=1)).mean() - z[np.arange(len(y_val)), y_val].mean())
        flor.log("val_loss", val_loss)
        flor.log("val_acc", float((z.argmax(axis=1) == y_val).mean()))
        if val_loss > best_val:
            lr /= {decay}
        best_val = min(best_val, val_loss)
        flor.log("lr", lr)
'''


def flordb_version(python: str, cwd: Path) -> str | None:
    """FlorDB's version in ``python``, found without importing it (its import writes .flor/)."""
    code = "import importlib.metadata as m; print(m.version('flordb'))"
    proc = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def snapshot_gitflor(python: str, dest: Path) -> str:
    """Copy the git_flor package ``python`` would import into ``dest``; say what it was.

    Every child imports this copy (PYTHONPATH wins over an editable install's
    finder), so edits made to the checkout while the benchmark runs cannot mix
    two versions in one table.
    """
    code = "import importlib.util as u, os; print(os.path.dirname(u.find_spec('git_flor').origin))"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"benchmark: git_flor is not importable by {python}")
    pkg = Path(found.stdout.strip())
    shutil.copytree(pkg, dest / "git_flor", ignore=shutil.ignore_patterns("__pycache__"))

    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", "-C", str(pkg), *cmd], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return f"{pkg} (copied at start)"
    edits = len(git("status", "--porcelain", "--", ".").splitlines())
    dirty = f" + {edits} locally modified files" if edits else ""
    return f"{pkg} at {head}{dirty} (copied at start)"

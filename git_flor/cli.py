"""``git flor``: argument parsing and error mapping only (the only click importer, docs/design.md §6).

Every command is a function in :mod:`git_flor.commands`; this module maps
:class:`FlorError` to one line on stderr and its exit code, and never lets a
traceback reach the user (unexpected errors are logged to
``$GIT_COMMON_DIR/flor/error.log``).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from .errors import EXIT_CHECK_FAILED, EXIT_USAGE, FlorError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FORMAT = click.Choice(["table", "csv", "json", "jsonl"])


def _run(fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
    try:
        code = fn(*args, **kwargs)
    except FlorError as exc:
        click.echo(f"git-flor: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("git-flor: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug of ours: one line for the user, the details in a log
        where = _log_internal_error()
        click.echo(f"git-flor: internal error: {type(exc).__name__}: {exc} (details: {where})", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    sys.exit(code)


def _log_internal_error() -> str:
    try:
        from .commands.common import error_log_path

        path = error_log_path()
    except Exception:
        import tempfile
        from pathlib import Path

        path = Path(tempfile.gettempdir()) / "git-flor-error.log"
    with open(path, "a") as fh:
        traceback.print_exc(file=fh)
    return str(path)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="git-flor", prog_name="git-flor")
def cli() -> None:
    """Multiversion hindsight logging for machine learning, built into git.

    \b
    Example:
      python train.py --kwargs lr=5e-4     # a script using flor.log / flor.arg / flor.loop
      git flor runs                        # one row per run
      git flor log loss lr                 # every run of every version as one table
    """


@cli.command("runs")
@click.option("--rev", help="Only runs at this commit (HEAD~3) or in this range (A..B).")
@click.option("--format", "fmt", type=FORMAT, default="table", show_default=True)
def runs_cmd(rev: str | None, fmt: str) -> None:
    """One row per run: id, commit, dirty, script, start, duration, status, args.

    \b
    Example:
      git flor runs --rev HEAD~5..HEAD --format json
    """
    from .commands.runs import runs

    _run(runs, rev=rev, fmt=fmt)


@cli.command("show")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show_cmd(run: str, fmt: str) -> None:
    """One run in full (RUN is a run id or a unique prefix of one).

    \b
    Example:
      git flor show 3f2a
    """
    from .commands.runs import show

    _run(show, run, fmt=fmt)


@cli.command("log")
@click.argument("names", nargs=-1)
@click.option("--rev", help="Only runs at this commit (HEAD~3) or in this range (A..B).")
@click.option("--run", "runs", multiple=True, help="Only this run (id or prefix); repeatable.")
@click.option("--where", help='A pandas query over args and values, e.g. "lr < 1e-3".')
@click.option("--format", "fmt", type=FORMAT, default="table", show_default=True)
@click.option("--provenance", is_flag=True, help="Add NAME@ columns: recorded, hindsight or arg.")
@click.option("--script", "scripts", multiple=True, help="Only runs of this script (its path or file name); repeatable.")
@click.option("--join/--no-join", default=None,
              help="Join the scripts of a pipeline: one row per commit (the latest run of each script "
                   "there) and shared loop position / one row per run. Default: join when the NAMEs "
                   "come from several scripts, each from one.")
def log_cmd(
    names: tuple[str, ...], rev: str | None, runs: tuple[str, ...], where: str | None, fmt: str, provenance: bool,
    scripts: tuple[str, ...], join: bool | None,
) -> None:
    """The wide table: one row per run and loop position, one column per NAME (all when none).

    Values of several scripts run at one commit (prepare.py, train.py, evaluate.py)
    are joined into one row per commit and loop position when the NAMEs come from
    more than one script; each script contributes its latest run at that commit.

    \b
    Example:
      git flor log loss lr
      git flor log val_acc --where "lr < 1e-3" --format csv > metrics.csv
      git flor log n_rows acc test_acc          # a pipeline: one row per commit
    """
    from .commands.log import log

    _run(log, names, rev=rev, runs=runs, where=where, fmt=fmt, provenance=provenance, scripts=scripts, join=join)


@cli.command("plot")
@click.argument("names", nargs=-1, required=True)
@click.option("--x", "x", help="epoch, step… (a loop name) or tstamp; default: the finest loop of each NAME.")
@click.option("--by", default="run", show_default=True, help="One line per run, per commit, or per value of an argument (e.g. lr).")
@click.option("--rev", help="Only runs at this commit (HEAD~3) or in this range (A..B).")
@click.option("--where", help='A pandas query over args and values, e.g. "lr < 1e-3".')
@click.option("-o", "--output", help="Write an image: .png, .svg or .pdf (needs matplotlib: the [plot] extra).")
@click.option("--provenance", is_flag=True, help="Ring the points that are hindsight values.")
@click.option("--text", is_flag=True, help="Draw the text chart even when stdout is not a terminal.")
def plot_cmd(
    names: tuple[str, ...], x: str | None, by: str, rev: str | None, where: str | None, output: str | None,
    provenance: bool, text: bool,
) -> None:
    """Draw NAME across runs and versions: one panel per NAME, one line per run (or group).

    A nested loop as --x counts its positions across the outer loop (the global step); a
    value logged more finely than --x is averaged over each x; --x tstamp draws each run's
    last value at its start time. Groups (--by commit, --by ARG) draw the mean of their
    runs with the min-max band. Hindsight values are drawn like recorded ones. Without -o,
    on a terminal: a text chart; otherwise exit 2.

    \b
    Example:
      git flor plot val_acc loss --by lr -o curves.png
      git flor plot val_acc --x tstamp --rev main~20..main -o history.svg
      git flor plot loss --x epoch --where "lr < 0.3"
    """
    from .commands.plot import plot

    _run(plot, names, x=x, by=by, rev=rev, where=where, output=output, provenance=provenance, text=text)


@cli.command("reindex")
def reindex_cmd() -> None:
    """Rebuild the query index (a cache under .git/flor) from the refs."""
    from .commands.log import reindex

    _run(reindex)


@cli.command("init")
@click.option("--no-remotes", is_flag=True, help="Do not add fetch refspecs to the existing remotes.")
@click.option("--edit-tracked", is_flag=True,
              help="Allow changes to hook files tracked in this repository (husky's .husky/, a "
                   "tracked core.hooksPath); each change is listed.")
def init_cmd(no_remotes: bool, edit_tracked: bool) -> None:
    """Install the hooks (keeping yours), make notes follow amend/rebase, add fetch refspecs.

    Idempotent; `git flor uninstall` removes exactly what it added. Hook managers:
    under pre-commit the git-flor hook becomes `post-commit.legacy`, which pre-commit
    runs first; for a set-up that survives `pre-commit install -f`, add to
    .pre-commit-config.yaml instead (then init installs no post-commit shim):

    \b
      - repo: local
        hooks:
        - id: git-flor
          name: git-flor links runs to commits
          entry: git flor hook post-commit
          language: system
          stages: [post-commit]
          always_run: true
          pass_filenames: false

    With husky, `--edit-tracked` adds a line to .husky/post-commit and
    .husky/post-rewrite; with lefthook, add `git flor hook post-commit` as a
    post-commit command in lefthook.yml. git-flor never changes a tracked file
    without --edit-tracked.

    \b
    Example:
      git flor init
      python train.py              # a run on uncommitted edits ...
      git commit -am "cosine lr"   # ... is linked to this commit by the hook
    """
    from .commands.init import init

    _run(init, remotes=not no_remotes, edit_tracked=edit_tracked)


@cli.command("uninstall")
def uninstall_cmd() -> None:
    """Remove the hooks and config values `git flor init` added; put your own hooks back.

    \b
    Example:
      git flor uninstall
    """
    from .commands.init import uninstall

    _run(uninstall)


@cli.command("hook", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hook_cmd(name: str, args: tuple[str, ...]) -> None:
    """Run git hook NAME (what the installed hook shims call); always exits 0.

    \b
    Example:
      git flor hook post-commit
    """
    from .commands.hook import hook

    stdin = sys.stdin.read() if name == "post-rewrite" and not sys.stdin.isatty() else ""
    sys.exit(hook(name, list(args), stdin))


@cli.command("push")
@click.argument("remote", default="origin")
def push_cmd(remote: str) -> None:
    """Send this clone's runs, checkpoint manifests and the notes to REMOTE (notes are union-merged).

    With `git config flor.store URL` set, checkpoint payloads the store lacks are uploaded too.
    Exit 3 when the remote rejected a ref.

    \b
    Example:
      git flor push origin
    """
    from .commands.share import push

    _run(push, remote)


@cli.command("pull")
@click.argument("remote", default="origin")
def pull_cmd(remote: str) -> None:
    """Fetch every clone's runs and checkpoint manifests from REMOTE and union-merge the notes.

    \b
    Example:
      git flor pull origin && git flor log val_acc
    """
    from .commands.share import pull

    _run(pull, remote)


@cli.group("check")
def check_group() -> None:
    """Gates for CI, answered by the exit code: 0 pass, 1 fail, 3 nothing to check.

    \b
    Example:
      git flor check metric val_acc --min 0.9 --rev HEAD
    """


@check_group.command("metric")
@click.argument("name")
@click.option("--min", "minimum", type=float, help="Fail when the value is below this.")
@click.option("--max", "maximum", type=float, help="Fail when the value is above this.")
@click.option("--rev", help="Judge the latest run at this commit (or range); default: the latest run.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def check_metric_cmd(name: str, minimum: float | None, maximum: float | None, rev: str | None, fmt: str) -> None:
    """Check the last value of NAME in the latest run that logged it against --min/--max.

    Exit 0 when the bound holds, 1 when it does not, 3 when no selected run logged NAME.

    \b
    Example:
      git flor check metric val_acc --min 0.9 --rev HEAD
      git flor check metric loss --max 0.05 --format json
    """
    from .commands.check import check_metric

    _run(check_metric, name, minimum=minimum, maximum=maximum, rev=rev, fmt=fmt)
@check_group.command("propagate")
@click.option("--names", help="Only these statements (comma-separated names); default: all new ones.")
@click.option("--rev", help="Only the versions of runs at this commit (or range).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def check_propagate_cmd(names: str | None, rev: str | None, fmt: str) -> None:
    """Dry-run propagation of today's flor statements into every recorded version's code.

    Checks every file replay would carry statements into (the script and the modules of
    its snapshot that hold them). Exit 0 when every statement fits every version, 3 (with
    a report) when one does not or there is no recorded version; a name computed
    differently in a version than today is a warning. Nothing is written.

    \b
    Example:
      git flor check propagate
      git flor check propagate --names grad_norm --format json
    """
    from .commands.check import check_propagate

    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    _run(check_propagate, names=wanted, rev=rev, fmt=fmt)
@cli.command("propagate")
@click.argument("rev")
@click.argument("paths", nargs=-1)
@click.option("--from", "source_rev", help="Take today's statements from this revision (default: the working tree).")
@click.option("--names", multiple=True, help="Only these statements (comma-separated names).")
@click.option("--diff", is_flag=True, help="Print a unified diff against REV's file.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: placements (name, from line, to line, anchor, confidence).")
@click.option("--force", is_flag=True, help="Place statements even if they read names REV never defines.")
def propagate_cmd(
    rev: str, paths: tuple[str, ...], source_rev: str | None, names: tuple[str, ...], diff: bool,
    as_json: bool, fmt: str, force: bool,
) -> None:
    """Carry today's flor statements into PATHS as of REV (a revision or a run id).

    Prints the propagated file (one PATH) or a diff; exit 3 when a statement could
    not be placed (reasons on stderr). A statement goes where every name it reads is
    bound, at its loop depth; drift (a name computed differently there) is a warning
    on stderr and in --json. PATHS default to every file with new statements.

    \b
    Example:
      git flor propagate HEAD~12 -- train.py
      git flor propagate HEAD~12 --diff -- train.py
      git flor propagate 3f2a --format json
    """
    from .commands.propagate import propagate

    _run(propagate, rev, paths, source_rev=source_rev, names=names, diff=diff,
         as_json=as_json or fmt == "json", force=force)


@cli.command("replay")
@click.argument("selectors", nargs=-1)
@click.option("--apply", "apply", multiple=True, required=True, help="Names to fill in (comma-separated or repeated).")
@click.option("--iter", "iters", multiple=True, help="Only these iterations, e.g. epoch=3,7 or epoch=0..9.")
@click.option("--where", help='A pandas query over args and values selecting runs, e.g. "lr < 1e-3".')
@click.option("--workers", type=int, help="Parallel jobs (default: the number of cores; on Ray, the cluster's CPUs).")
@click.option("--dry-run", is_flag=True, help="Show the schedule and stop.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Recompute values that already exist.")
@click.option("--trust-checkpoints", is_flag=True,
              help="Resume from checkpoints even where the original run left nothing to verify the replay by.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where jobs run: local processes, or a Ray cluster (RAY_ADDRESS or git config "
                   "flor.ray.address; else a local Ray). Default: git config flor.executor, else local.")
def replay_cmd(
    selectors: tuple[str, ...], apply: tuple[str, ...], iters: tuple[str, ...], where: str | None,
    workers: int | None, dry_run: bool, yes: bool, force: bool, trust_checkpoints: bool, fmt: str,
    executor: str | None,
) -> None:
    """Fill in today's flor.log statements for past runs (SELECTORS: run ids or revisions; default all).

    Today's statements are carried into each run's own code, which is re-run from
    its checkpoints only as far as they need, in parallel. Asks once on a terminal.
    Every segment that resumes from a checkpoint or skips work is verified against
    the values and state fingerprints the original run recorded, and falls back
    (an earlier checkpoint, then the start) when they differ. Exit 4: values were
    written but the script did not reproduce its own recorded values from the start
    (not deterministic); they show as "hindsight (unverified)" in git flor log --provenance.

    \b
    Example:
      git flor replay --apply grad_norm --dry-run
      git flor replay HEAD~5..HEAD --apply grad_norm --iter epoch=0,9 --workers 4 --yes
      RAY_ADDRESS=head:6379 git flor replay --apply grad_norm --executor ray --yes
    """
    from .commands.replay import replay

    interactive = not yes and sys.stdin.isatty()
    confirm = (lambda msg: click.confirm(msg, default=True)) if interactive else None
    _run(replay, selectors, apply, iters=iters, where=where, workers=workers, dry_run=dry_run,
         force=force, trust_checkpoints=trust_checkpoints, fmt=fmt, confirm=confirm, executor=executor)


@cli.group("ckpt")
def ckpt_group() -> None:
    """A run's checkpoints as a model registry: list them, export one saved object as a plain file.

    From Python: flor.load("model", run=ID, iter={"epoch": 7}, into=net).

    \b
    Example:
      git flor ckpt list 3f2a
      git flor ckpt export 3f2a --name model --iter epoch=7 -o model.pt
    """


@ckpt_group.command("list")
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def ckpt_list_cmd(run: str, fmt: str) -> None:
    """Every object saved at every checkpointed iteration of RUN (id or unique prefix), with its size.

    \b
    Example:
      git flor ckpt list 3f2a --format json
    """
    from .commands.ckpt import listing

    _run(listing, run, fmt=fmt)


@ckpt_group.command("export")
@click.argument("run")
@click.option("--name", required=True, help="The object's name in flor.checkpointing (or a loop-carried variable).")
@click.option("--iter", "iteration", help="LOOP=N, e.g. epoch=7 (default: the last saved iteration).")
@click.option("-o", "--output", required=True, help="The file to write ('-' for stdout).")
def ckpt_export_cmd(run: str, name: str, iteration: str | None, output: str) -> None:
    """Write one saved object of RUN as a file that torch.load, numpy.load or pickle.load reads.

    The payload comes from this clone, or from the store of `git config flor.store` when only
    the manifest was pulled. Exit 2 when RUN, the name or the iteration was not saved (the
    message lists what was).

    \b
    Example:
      git flor ckpt export 3f2a --name model --iter epoch=7 -o model.pt
      python -c "import torch; net.load_state_dict(torch.load('model.pt'))"
    """
    from .commands.ckpt import export

    _run(export, run, name=name, iteration=iteration, output=output)


@cli.command("gc")
@click.option("--keep-every", type=int, help="Thin each run's checkpoints to every K-th iteration (first and last always kept).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def gc_cmd(keep_every: int | None, dry_run: bool, fmt: str) -> None:
    """Delete checkpoint payloads no manifest references (never a referenced one).

    \b
    Example:
      git flor gc --keep-every 5 --dry-run
    """
    from .commands.gc import gc

    _run(gc, keep_every=keep_every, dry_run=dry_run, fmt=fmt)


@cli.command("help")
@click.argument("command", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, command: str | None) -> None:
    """Show help for git flor or one of its commands."""
    parent = ctx.parent
    assert parent is not None
    if command is None:
        click.echo(cli.get_help(parent))
        return
    sub = cli.get_command(parent, command)
    if sub is None:
        click.echo(f"git-flor: no such command {command!r}; see `git flor help`", err=True)
        sys.exit(EXIT_USAGE)
    with click.Context(sub, info_name=command, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


def main() -> None:
    cli(prog_name="git flor")


if __name__ == "__main__":
    main()

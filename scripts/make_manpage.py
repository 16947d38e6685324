"""Write ``git_flor/man/man1/git-flor.1`` from the CLI's own help text.

git turns ``git flor --help`` into ``man git-flor``, so the man page is the
help a git user reaches first. It is generated from the click commands (one
source of truth) and a test fails when the committed page is stale:

    .venv/bin/python scripts/make_manpage.py          # rewrite it
    .venv/bin/python scripts/make_manpage.py --check  # exit 1 if stale
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import click

from git_flor import __version__
from git_flor.cli import cli

PAGE = Path(__file__).resolve().parent.parent / "git_flor" / "man" / "man1" / "git-flor.1"

EXIT_CODES = [
    ("0", "success"),
    ("1", "a check failed (or an internal error, logged to .git/flor/error.log)"),
    ("2", "usage error: unknown run, revision or name; bad expression"),
    ("3", "partial: some versions, statements or refs not done; a check found nothing to judge"),
    ("128", "not a git repository, or a bare one"),
]


def _esc(text: str) -> str:
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in out.splitlines())


def _help_body(cmd: click.Command) -> list[str]:
    """The command's help text as roff: paragraphs, with ``\\b`` blocks kept verbatim."""
    lines: list[str] = []
    for para in inspect.cleandoc(cmd.help or "").split("\n\n"):
        if para.startswith("\b"):
            lines += [".PP", ".nf", _esc(textwrap.dedent(para.lstrip("\b").strip("\n"))), ".fi"]
        else:
            lines += [".PP", _esc(" ".join(para.split()))]
    return lines


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    lines = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument) or "--help" in record[0]:
            continue
        lines += [".TP", f"\\fB{_esc(record[0])}\\fR", _esc(record[1] or "")]
    return lines


def _commands(group: click.Group, ctx: click.Context, prefix: str) -> list[str]:
    lines: list[str] = []
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        lines += [".SS", f"\\fB{_esc(prefix + ' ' + name)}\\fR {_esc(usage)}"]
        lines += _help_body(cmd) + _options(cmd, sub)
        if isinstance(cmd, click.Group):
            lines += _commands(cmd, sub, f"{prefix} {name}")
    return lines


def render() -> str:
    ctx = click.Context(cli, info_name="git flor")
    lines = [
        f'.TH GIT\\-FLOR 1 "" "git-flor {__version__}" "Git Manual"',
        ".SH NAME",
        "git\\-flor \\- multiversion hindsight logging for machine learning, built into git",
        ".SH SYNOPSIS",
        ".nf",
        "\\fBgit flor\\fR \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        "\\fBgit flor help\\fR [\\fICOMMAND\\fR]",
        "\\fBgit flor\\fR \\fICOMMAND\\fR \\fB\\-h\\fR",
        ".fi",
        ".SH DESCRIPTION",
        *_help_body(cli),
        ".SH COMMANDS",
        *_commands(cli, ctx, "git flor"),
        ".SH EXIT STATUS",
    ]
    for code, meaning in EXIT_CODES:
        lines += [".TP", f"\\fB{code}\\fR", _esc(meaning)]
    lines += [
        ".SH SEE ALSO",
        "\\fBgit\\-notes\\fR(1), \\fBgit\\-fetch\\fR(1), \\fBgithooks\\fR(5)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python scripts/make_manpage.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

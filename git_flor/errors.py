"""One error family for git-flor.

Every failure a user can cause is a :class:`FlorError` whose message says what is
wrong *and what to do next*; the CLI maps it to one line on stderr and the exit
code documented in docs/design.md §2. Nothing else in the package decides exit codes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
#: replay wrote values that a re-execution from the start did not verify (not deterministic)
EXIT_UNVERIFIED = 4
EXIT_NOT_A_REPO = 128


class FlorError(Exception):
    """A user-facing error: one line, with the way out, and an exit code."""

    exit_code: int = EXIT_USAGE


class NotARepository(FlorError):
    """Raised outside a git repository or in a bare one (git's own exit code)."""

    exit_code = EXIT_NOT_A_REPO


class UsageError(FlorError):
    """Bad arguments: unknown run, unknown revision, malformed expression."""

    exit_code = EXIT_USAGE


class CheckFailed(FlorError):
    """A scripted check ran and its condition does not hold."""

    exit_code = EXIT_CHECK_FAILED


class Partial(FlorError):
    """Some of the requested work was done and some was not."""

    exit_code = EXIT_PARTIAL


class Unverified(FlorError):
    """Everything requested was written, but some values could not be verified (see replay)."""

    exit_code = EXIT_UNVERIFIED


class UnloggableValue(FlorError, TypeError):
    """A ``flor.log``/``flor.arg`` value that cannot be stored typed.

    Also a ``TypeError`` so training code that guards with ``except TypeError``
    keeps working; never silently stringified (docs/design.md §1).
    """


class BadArgument(FlorError, ValueError):
    """A ``--kwargs k=v`` override that does not cast to the default's type."""

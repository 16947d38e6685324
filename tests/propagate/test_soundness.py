"""Propagation must never make a past version worse: no NameError injected, no syntax
error, nothing touched outside the inserted bytes, and nothing inserted twice."""

from __future__ import annotations

from textwrap import dedent

import pytest

from git_flor.propagate import Failure, PropagationError, propagate_source

TODAY = dedent(
    """\
    import git_flor as flor

    def train(model, loader, opt):
        for x, y in loader:
            loss = model(x, y)
            loss.backward()
            total_norm = clip(model)
            flor.log("grad_norm", total_norm)
            opt.step()
            flor.log("loss", loss)
    """
)
PAST = dedent(
    """\
    import git_flor as flor

    def train(model, loader, opt):
        for x, y in loader:   # the old loop
            loss = model(x, y)
            loss.backward()
            opt.step()
    """
)


def test_undefined_name_is_reported_not_injected() -> None:
    res = propagate_source(TODAY, PAST)
    assert not res.ok
    assert res.failures == [
        Failure("grad_norm", "reads `total_norm`, which the past version never defines")
    ]
    assert str(res.failures[0]) == "grad_norm: reads `total_norm`, which the past version never defines"
    # The statement that can be placed still is.
    assert [p.name for p in res.placements] == ["loss"]
    assert res.source == PAST.replace("opt.step()\n", "opt.step()\n        flor.log(\"loss\", loss)\n")


def test_force_inserts_despite_unbound_names() -> None:
    res = propagate_source(TODAY, PAST, force=True)
    assert res.ok
    assert res.source == PAST.replace(
        "loss.backward()\n",
        "loss.backward()\n        flor.log(\"grad_norm\", total_norm)\n",
    ).replace("opt.step()\n", "opt.step()\n        flor.log(\"loss\", loss)\n")


def test_name_bound_elsewhere_but_not_in_scope() -> None:
    today = dedent(
        """\
        import git_flor as flor
        def evaluate(model):
            acc = score(model)
            flor.log("acc", acc)
            return acc
        """
    )
    past = dedent(
        """\
        def helper():
            acc = 1
        def evaluate(model):
            accuracy = score(model)
            return accuracy
        """
    )
    res = propagate_source(today, past)
    # `acc` maps to `accuracy` through the matching, so it is renamed, not refused.
    assert res.ok, res.failures
    assert "    flor.log(\"acc\", accuracy)\n" in res.source

    past2 = past.replace("accuracy = score(model)", "score(model)").replace(
        "return accuracy", "return None")
    res2 = propagate_source(today, past2)
    assert res2.failures == [
        Failure("acc", "reads `acc`, which is not defined in scope at line 4 of the past version")
    ]


def test_builtins_parameters_and_module_names_are_bound() -> None:
    today = dedent(
        """\
        import git_flor as flor
        import numpy as np
        SCALE = 2
        def f(a, *rest, b=1, **kw):
            out = a + b
            flor.log("v", [len(rest), kw, np.mean(out) * SCALE, sorted(kw)])
            return out
        """
    )
    past = dedent(
        """\
        import numpy as np
        SCALE = 2
        def f(a, *rest, b=1, **kw):
            out = a + b
            return out
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures


def test_syntax_error_in_past_is_a_failure_with_the_line() -> None:
    past = "def train(:\n    pass\n"
    res = propagate_source(TODAY, past)
    assert res.source == past
    assert res.placements == []
    assert [f.name for f in res.failures] == ["grad_norm", "loss"]
    assert res.failures[0].reason == (
        "the past version does not parse (syntax error at line 1); nothing was inserted")


def test_syntax_error_today_raises() -> None:
    with pytest.raises(PropagationError, match="line 2"):
        propagate_source("import git_flor as flor\nflor.log('a', (\n", PAST)


def test_idempotent() -> None:
    once = propagate_source(TODAY, PAST, force=True)
    twice = propagate_source(TODAY, once.source, force=True)
    assert twice.source == once.source
    assert twice.placements == [] and twice.ok


def test_nothing_to_do_is_byte_identical() -> None:
    past = PAST.replace("\n", "\r\n") + "\t# odd trailing bytes \x0c\n"
    res = propagate_source("import git_flor as flor\nx = 1\n", past)
    assert res.source == past and res.ok and res.placements == []


def test_bytes_outside_insertions_are_identical() -> None:
    past = dedent(
        """\
        #!/usr/bin/env python
        # -*- coding: utf-8 -*-
        '''Docstring, kept.'''
        import os ,sys   # odd spacing stays
        def   train( model ):   # so does this
            x = model  ( 1 )  # é and emoji 🚀 stay
            return x
        """
    )
    today = dedent(
        """\
        '''Docstring.'''
        import git_flor as flor
        import os, sys
        def train(model):
            x = model(1)
            flor.log("x", x)
            return x
        """
    )
    res = propagate_source(today, past)
    assert res.ok
    added = {"import git_flor as flor", "    flor.log(\"x\", x)"}
    kept = [line for line in res.source.split("\n") if line not in added]
    assert "\n".join(kept) == past
    assert res.source.split("\n")[4] == "import git_flor as flor"
    assert res.source.split("\n")[7] == "    flor.log(\"x\", x)"


def test_import_not_duplicated_and_added_after_future_and_docstring() -> None:
    today = "import git_flor as flor\nx = f()\nflor.log('x', x)\n"
    past = '"""Doc."""\nfrom __future__ import annotations\nx = f()\n'
    res = propagate_source(today, past)
    assert res.source == (
        '"""Doc."""\nfrom __future__ import annotations\nimport git_flor as flor\n'
        "x = f()\nflor.log('x', x)\n"
    )
    res2 = propagate_source(today, "import git_flor as flor\nx = f()\n")
    assert res2.source == "import git_flor as flor\nx = f()\nflor.log('x', x)\n"


def test_names_filter_and_unknown_names() -> None:
    res = propagate_source(TODAY, PAST, ["loss", "nope"])
    assert [p.name for p in res.placements] == ["loss"]
    assert res.failures == [Failure("nope", "today's source has no flor.log statement with this name")]


def test_unplaceable_statement_when_its_function_is_new() -> None:
    today = dedent(
        """\
        import git_flor as flor
        def brand_new(v):
            flor.log("v", v)
        x = 1
        """
    )
    res = propagate_source(today, "x = 1\n")
    assert res.failures == [Failure("v", "none of the code around it exists in the past version")]
    assert res.source == "x = 1\n"


def test_new_block_with_other_new_code_is_refused_unless_forced() -> None:
    today = dedent(
        """\
        import git_flor as flor
        net = build()
        if args.resume:
            state = torch.load("ckpt.pth")
            flor.log("resumed_from", state["epoch"])
        train(net)
        """
    )
    past = "net = build()\ntrain(net)\n"
    res = propagate_source(today, past)
    assert res.source == past
    assert res.failures == [Failure(
        "resumed_from",
        "its enclosing `if args.resume` block is new and also holds other new code (line 4); "
        "use --force to carry the whole block")]
    forced = propagate_source(today, past, force=True)
    assert forced.source == (
        "import git_flor as flor\nnet = build()\nif args.resume:\n"
        "    state = torch.load(\"ckpt.pth\")\n    flor.log(\"resumed_from\", state[\"epoch\"])\n"
        "train(net)\n"
    )

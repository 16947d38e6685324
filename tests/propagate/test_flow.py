"""Reaching definitions: which names are bound on every path to each slot of a block."""

from __future__ import annotations

from textwrap import dedent

from git_flor.propagate import cst
from git_flor.propagate.flow import Flow, statements


def bound_after_each(src: str, names: list[str]) -> list[set[str]]:
    """For each slot of the module (before statement 0, ..., after the last), the names
    among `names` bound on every path there."""
    root = cst.parse(dedent(src).encode()).root_node
    f = Flow(root, names)
    return [{n for n in names if f.bound(n, root, i)} for i in range(len(statements(root)) + 1)]


def test_order_branches_and_deletion() -> None:
    slots = bound_after_each(
        """\
        a = 1
        if c:
            b = 2
        else:
            b = 3
            d = 4
        del a
        (e := 5)
        """, ["a", "b", "d", "e"])
    assert slots == [set(), {"a"}, {"a", "b"}, {"b"}, {"b", "e"}]


def test_loops_run_at_least_once_and_break_paths_count() -> None:
    slots = bound_after_each(
        """\
        for i in range(3):
            x = i
        while True:
            if i:
                y = 1
                break
            z = 2
        """, ["i", "x", "y", "z"])
    assert slots[1] == {"i", "x"}
    assert slots[2] == {"i", "x", "y"}  # the only way out is the `break`, after `y = 1`


def test_loop_body_sees_carried_definitions_but_not_on_the_first_iteration() -> None:
    root = cst.parse(b"best = 0\nfor e in r:\n    use(best, acc)\n    acc = f(e)\n    best = acc\n").root_node
    f = Flow(root, ["best", "acc"])
    body = statements(root)[1].child_by_field_name("body")
    assert f.bound("best", body, 0) and not f.bound("acc", body, 0)
    assert len(f.at(body, 0)["best"]) == 2  # `best = 0` and the carried `best = acc`
    assert f.bound("acc", body, 2)


def test_try_with_and_handlers() -> None:
    slots = bound_after_each(
        """\
        try:
            import fast as impl
        except ImportError as err:
            impl = None
        finally:
            done = True
        with open(p) as fh:
            data = fh.read()
        """, ["impl", "err", "done", "fh", "data"])
    assert slots[1] == {"impl", "done"}  # `err` is gone after its handler
    assert slots[2] == {"impl", "done", "fh", "data"}


def test_return_makes_the_rest_unreachable_and_parameters_are_bound() -> None:
    root = cst.parse(b"def f(a, *, b=1):\n    if a:\n        return 0\n    c = a\n    return c\n").root_node
    fn = root.named_children[0]
    body = fn.child_by_field_name("body")
    f = Flow(fn, ["a", "b", "c"])
    assert f.bound("a", body, 0) and f.bound("b", body, 0) and not f.bound("c", body, 1)
    assert f.bound("c", body, 2) and f.at(body, 3) is None


def test_a_sure_read_is_evidence_that_the_name_is_bound() -> None:
    # `import wandb` is conditional; the later `if wandb_log:` block reads it: any run that
    # got past that read had it bound, so a statement after the read is as safe as the read.
    root = cst.parse(dedent(
        """\
        if wandb_log:
            import wandb
        if wandb_log:
            wandb.log(1)
            done = 1
        x = maybe and wandb.run
        """).encode()).root_node
    f = Flow(root, ["wandb"])
    second = statements(root)[1].child_by_field_name("consequence")
    assert not f.bound("wandb", second, 0) and f.bound("wandb", second, 1)
    assert not f.bound("wandb", root, 2)  # the block may not have run
    assert not f.bound("wandb", root, 3)  # `and` may not have evaluated its right side

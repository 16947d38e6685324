"""Placement follows the data: a statement lands where every name it reads is bound on every
path (reaching definitions), at the same loop depth as today, or is reported with a reason;
a name computed differently there than today is a warning."""

from __future__ import annotations

from textwrap import dedent

from git_flor.propagate import Drift, propagate_source

HELPER_TODAY = dedent(
    """\
    import numpy as np
    import git_flor as flor


    def make_data(seed):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(64, 4))
        y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)
        return X, y


    seed = flor.arg("seed", 0)
    steps = flor.arg("steps", 5)
    X, y = make_data(seed)
    flor.log("data_mean", float(y.mean()))
    w = np.zeros(4)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(steps)):
            w -= 0.1 * X.T @ (X @ w - y) / len(X)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
    """
)
INLINE_PAST = dedent(
    """\
    import numpy as np
    import git_flor as flor

    seed = flor.arg("seed", 0)
    steps = flor.arg("steps", 5)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)
    w = np.zeros(4)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(steps)):
            w -= 0.1 * X.T @ (X @ w - y) / len(X)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
    """
)


def test_inline_data_in_the_past_helper_today_lands_after_y_exists() -> None:
    res = propagate_source(HELPER_TODAY, INLINE_PAST, ["data_mean"])
    assert res.ok, res.failures
    # The matcher's spot is after `steps = ...` (today's previous statement, the helper
    # call, has no image); `y` is bound only three lines later, so that is where it goes.
    assert res.source == INLINE_PAST.replace(
        "+ 0.1 * rng.normal(size=64)\n",
        "+ 0.1 * rng.normal(size=64)\nflor.log(\"data_mean\", float(y.mean()))\n")
    [p] = res.placements
    assert p.to_line == 9 and "follows `y`, which the past computes at line 8" in p.anchor
    # `y` comes from the helper today and is computed inline there: said, not refused.
    assert res.warnings == [Drift(
        "data_mean", "y",
        "`y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)` at line 8",
        "`X, y = make_data(seed)` at line 14")]


def test_a_name_bound_only_later_in_the_function_moves_the_statement_after_it() -> None:
    today = dedent(
        """\
        import git_flor as flor

        def evaluate(model, data):
            acc = accuracy(model, data)
            model.eval()
            flor.log("acc", acc)
            report(acc)
        """
    )
    past = dedent(
        """\
        def evaluate(model, data):
            model.eval()
            print("evaluating")
            acc = accuracy(model, data)
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    # The matched spot, after `model.eval()`, is before `acc` exists: the nearest slot
    # where it is bound is after its assignment.
    assert res.source == "import git_flor as flor\n" + past + '    flor.log("acc", acc)\n'
    assert "moved from line 2, where `acc` is not yet bound" in res.placements[0].anchor
    assert res.warnings == []  # the same `acc = accuracy(model, data)` in both


def test_the_statement_follows_the_name_its_previous_statement_computes() -> None:
    today = dedent(
        """\
        import git_flor as flor

        def main(args):
            train_loader = loader(train_set, **train_kwargs)
            flor.log("n_train", len(train_loader))
            test_loader = loader(test_set, **test_kwargs)
        """
    )
    past = dedent(
        """\
        def main(args):
            train_loader = loader(MNIST("../data", train=True), batch_size=64)
            test_loader = loader(MNIST("../data", train=False), batch_size=1000)
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == "import git_flor as flor\n" + past.replace(
        "batch_size=64)\n", "batch_size=64)\n    flor.log(\"n_train\", len(train_loader))\n")


def test_loop_carried_names_count_only_when_bound_before_the_loop() -> None:
    today = dedent(
        """\
        import git_flor as flor
        best = 0.0
        for epoch in range(10):
            flor.log("best", best)
            acc = train(epoch)
            flor.log("acc", acc)
            best = max(best, acc)
        """
    )
    past = dedent(
        """\
        best = 0.0
        for epoch in range(10):
            acc = train(epoch)
            best = max(best, acc)
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    # `best` is bound at the top of the body (before the loop, then by the previous
    # iteration): no move. `acc` is carried from the previous iteration too, but not bound
    # in the first: it lands after its assignment.
    assert res.source == "import git_flor as flor\n" + past.replace(
        "range(10):\n", "range(10):\n    flor.log(\"best\", best)\n").replace(
        "acc = train(epoch)\n", "acc = train(epoch)\n    flor.log(\"acc\", acc)\n")

    moved = dedent(
        """\
        for epoch in range(10):
            loss = step(epoch)
            lr = schedule(epoch)
        """
    )
    today2 = dedent(
        """\
        import git_flor as flor
        for epoch in range(10):
            lr = schedule(epoch)
            flor.log("lr", lr)
            loss = step(epoch)
        """
    )
    # Today's spot (right after `lr = ...`) maps before `loss = ...` in the past only if the
    # matcher saw nothing else; either way `lr` must be bound: after its assignment.
    res = propagate_source(today2, moved)
    assert res.ok, res.failures
    assert res.source.endswith("    lr = schedule(epoch)\n    flor.log(\"lr\", lr)\n")


def test_widens_to_the_enclosing_block_at_the_same_loop_depth() -> None:
    today = dedent(
        """\
        import git_flor as flor
        for epoch in range(3):
            acc = evaluate(model)
            with no_grad():
                out = model(x)
                flor.log("acc", acc)
        """
    )
    past = dedent(
        """\
        for epoch in range(3):
            with no_grad():
                out = model(x)
            acc = evaluate(model)
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    # Nowhere in the `with` block is `acc` bound; in the loop body around it, after its
    # assignment -- still once per epoch.
    assert res.source == "import git_flor as flor\n" + past + '    flor.log("acc", acc)\n'


def test_never_moved_out_of_a_loop_no_valid_position_is_a_failure_with_the_reason() -> None:
    today = dedent(
        """\
        import git_flor as flor
        total = 0
        for x in data:
            total += x
            flor.log("running", total)
        """
    )
    past = dedent(
        """\
        for x in data:
            print(x)
        total = sum(data)
        """
    )
    res = propagate_source(today, past)
    assert res.source == past and res.placements == []
    [f] = res.failures
    assert f.name == "running"
    assert f.reason == (
        "reads `total`, which is not bound on every path to line 2 of the past version "
        "(assigned at line 3), nor anywhere else in its block at the same loop depth "
        "without moving it out of the loop at line 1")


def test_bound_on_one_branch_only_is_not_bound() -> None:
    today = dedent(
        """\
        import git_flor as flor
        noise = make_noise()
        fit()
        flor.log("noise", noise)
        """
    )
    past = dedent(
        """\
        if args.noisy:
            noise = make_noise()
        fit()
        """
    )
    res = propagate_source(today, past)
    assert not res.ok and res.source == past
    assert "reads `noise`, which is not bound on every path" in res.failures[0].reason
    # Both branches binding it (or a try whose handler does) is bound.
    both = past.replace("fit()\n", "else:\n    noise = None\nfit()\n")
    assert propagate_source(today, both).ok
    guarded = dedent(
        """\
        try:
            noise = make_noise()
        except ImportError:
            noise = None
        fit()
        """
    )
    assert propagate_source(today, guarded).ok


def test_force_keeps_the_matched_spot() -> None:
    today = 'import git_flor as flor\nnoise = make_noise()\nfit()\nflor.log("noise", noise)\n'
    past = "if args.noisy:\n    noise = make_noise()\nfit()\n"
    res = propagate_source(today, past, force=True)
    assert res.ok and res.source == "import git_flor as flor\n" + past + 'flor.log("noise", noise)\n'


def test_drift_warning_when_a_name_is_computed_by_another_expression() -> None:
    today = dedent(
        """\
        import git_flor as flor

        def run(model, train, val):
            for batch in train:
                model.step(batch)
            total = sum(model.score(b) for b in val)
            flor.log("total", total)
        """
    )
    past = dedent(
        """\
        import git_flor as flor

        def run(model, train, val):
            for batch in train:
                model.step(batch)
            total = sum(model.score(b) for b in train)
        """
    )
    res = propagate_source(today, past)
    assert res.ok
    [w] = res.warnings
    assert w.variable == "total" and w.name == "total"
    assert str(w) == (
        "total: `total` is computed differently in the past version "
        "(`total = sum(model.score(b) for b in train)` at line 6) than today "
        "(`total = sum(model.score(b) for b in val)` at line 6)")
    # A variable renamed since, or flor.arg around the same value, is not drift.
    renamed = past.replace("total = sum(model.score(b) for b in train)",
                           "tot = sum(model.score(b) for b in val)")
    res = propagate_source(today, renamed)
    assert res.ok and res.warnings == [] and 'flor.log("total", tot)' in res.source
    args_today = 'import git_flor as flor\nlr = flor.arg("lr", 0.1)\nflor.log("lr2", lr * 2)\n'
    assert propagate_source(args_today, "lr = 0.1\n").warnings == []
    quotes = 'import git_flor as flor\nr = int(getenv("RANK"))\nflor.log("r", r)\n'
    assert propagate_source(quotes, "r = int(getenv('RANK'))  # comment\n").warnings == []


def test_not_moved_into_a_loop_the_matching_relates_to_today() -> None:
    today = dedent(
        """\
        import git_flor as flor
        for epoch in range(3):
            loss = step()
        final = evaluate()
        flor.log("final", final)
        """
    )
    past = dedent(
        """\
        for epoch in range(3):
            loss = step()
            final = evaluate()
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    # `final = evaluate()` is in the loop there: next to it the statement would log every
    # epoch instead of once. After the loop it is still bound (the loop ran), once per run.
    assert res.source == "import git_flor as flor\n" + past + 'flor.log("final", final)\n'


def test_a_loop_body_extracted_into_a_helper_keeps_its_nesting() -> None:
    today = dedent(
        """\
        import git_flor as flor

        def train_step(batch):
            loss = model(batch)
            flor.log("loss", loss)
            loss.backward()

        for epoch in range(3):
            for batch in loader:
                train_step(batch)
        """
    )
    past = dedent(
        """\
        for epoch in range(3):
            for batch in loader:
                loss = model(batch)
                loss.backward()
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == "import git_flor as flor\n" + past.replace(
        "loss = model(batch)\n", "loss = model(batch)\n        flor.log(\"loss\", loss)\n")

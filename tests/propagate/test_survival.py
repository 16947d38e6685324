"""Each refactoring a statement must survive, as a (today, past) fixture pair with the exact
expected output. Sources are dedented literals; `past` files keep their own comments and
layout, which the expected outputs repeat byte for byte."""

from __future__ import annotations

from textwrap import dedent

from git_flor.propagate import propagate_source


def prop(today: str, past: str, **kw: object):  # type: ignore[no-untyped-def]
    return propagate_source(dedent(today), dedent(past), **kw)  # type: ignore[arg-type]


def test_same_structure_inserts_after_anchor() -> None:
    res = prop(
        """\
        import git_flor as flor

        def train(net, loader):
            for x, y in loader:
                loss = net(x, y)
                flor.log("loss", loss)
                loss.backward()
        """,
        """\
        def train(net, loader):
            for x, y in loader:
                loss = net(x, y)
                loss.backward()
        """,
    )
    assert res.ok
    assert res.source == dedent(
        """\
        import git_flor as flor
        def train(net, loader):
            for x, y in loader:
                loss = net(x, y)
                flor.log("loss", loss)
                loss.backward()
        """
    )
    [p] = res.placements
    assert (p.name, p.from_line, p.to_line, p.confidence) == ("loss", 6, 5, 1.0)
    assert p.anchor == "after line 3: loss = net(x, y)"


def test_moved_into_a_function() -> None:
    today = """\
        import git_flor as flor
        import torch

        def main():
            model = build()
            for epoch in range(3):
                loss = step(model)
                flor.log("loss", loss)
            save(model)

        main()
        """
    past = """\
        import torch

        model = build()
        for epoch in range(3):
            loss = step(model)
        save(model)
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == dedent(
        """\
        import torch
        import git_flor as flor

        model = build()
        for epoch in range(3):
            loss = step(model)
            flor.log("loss", loss)
        save(model)
        """
    )


def test_moved_out_of_a_function() -> None:
    today = """\
        import git_flor as flor
        model = build()
        for epoch in range(3):
            loss = step(model)
            flor.log("loss", loss)
        """
    past = """\
        def main():
            model = build()
            for epoch in range(3):
                loss = step(model)
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == dedent(
        """\
        import git_flor as flor
        def main():
            model = build()
            for epoch in range(3):
                loss = step(model)
                flor.log("loss", loss)
        """
    )


def test_renamed_variable_is_renamed_in_the_statement() -> None:
    today = """\
        import git_flor as flor
        def train(model, loader, opt):
            for x, y in loader:
                opt.zero_grad()
                loss = crit(model(x), y)
                total_norm = clip(model.parameters(), 1.0)
                flor.log("grad_norm", total_norm)
                opt.step()
        """
    past = """\
        import git_flor as flor
        def train(model, loader, opt):
            for xb, yb in loader:
                opt.zero_grad()
                l = crit(model(xb), yb)
                tn = clip(model.parameters(), 1.0)
                opt.step()
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == dedent(
        """\
        import git_flor as flor
        def train(model, loader, opt):
            for xb, yb in loader:
                opt.zero_grad()
                l = crit(model(xb), yb)
                tn = clip(model.parameters(), 1.0)
                flor.log("grad_norm", tn)
                opt.step()
        """
    )
    assert "renamed `total_norm` to `tn`" in res.placements[0].anchor


def test_reordered_statements_follow_the_anchor() -> None:
    today = """\
        import git_flor as flor
        a = load_a()
        b = load_b()
        flor.log("b", b)
        c = load_c()
        """
    past = """\
        import git_flor as flor
        c = load_c()
        b = load_b()
        a = load_a()
        """
    res = prop(today, past)
    assert res.source == dedent(
        """\
        import git_flor as flor
        c = load_c()
        b = load_b()
        flor.log("b", b)
        a = load_a()
        """
    )


def test_block_wrapped_in_with_if_try() -> None:
    today = """\
        import git_flor as flor
        def evaluate(model, data):
            total = 0
            for x, y in data:
                out = model(x)
                total += (out == y).sum()
                flor.log("correct", total)
            return total
        """
    for opener in ("with torch.no_grad():", "if data is not None:", "try:"):
        closer = "\n    except Exception:\n        raise" if opener == "try:" else ""
        past = (
            "import git_flor as flor\n"
            "def evaluate(model, data):\n"
            f"    {opener}\n"
            "        total = 0\n"
            "        for x, y in data:\n"
            "            out = model(x)\n"
            "            total += (out == y).sum()\n"
            f"        return total{closer}\n"
        )
        res = propagate_source(dedent(today), past)
        assert res.ok, (opener, res.failures)
        assert res.source == past.replace(
            "(out == y).sum()\n",
            "(out == y).sum()\n            flor.log(\"correct\", total)\n",
        ), opener


def test_comments_and_blank_lines_changed() -> None:
    today = """\
        import git_flor as flor
        # today's comment
        x = 1

        y = x + 1
        flor.log("y", y)
        z = y * 2
        """
    past = """\
        import git_flor as flor
        x = 1  # one
        # a comment that only the past has

        # and another


        y = x + 1   # two
        # trailing comment line
        z = y * 2
        """
    res = prop(today, past)
    assert res.source == dedent(
        """\
        import git_flor as flor
        x = 1  # one
        # a comment that only the past has

        # and another


        y = x + 1   # two
        flor.log("y", y)
        # trailing comment line
        z = y * 2
        """
    )


def test_changed_anchor_still_matched_by_similarity() -> None:
    today = """\
        import git_flor as flor
        def train(args):
            model = make_model(args.arch, pretrained=args.pretrained, drop=args.drop)
            flor.log("params", model.n_params())
            run(model)
        """
    past = """\
        import git_flor as flor
        def train(args):
            model = make_model(args.arch, pretrained=True)
            run(model)
        """
    res = prop(today, past)
    assert res.source == dedent(
        """\
        import git_flor as flor
        def train(args):
            model = make_model(args.arch, pretrained=True)
            flor.log("params", model.n_params())
            run(model)
        """
    )
    assert 0 < res.placements[0].confidence < 1


def test_new_block_is_carried_whole() -> None:
    today = """\
        import git_flor as flor
        for step, batch in enumerate(loader):
            loss = train_step(batch)
            if step % 100 == 0:
                flor.log("loss", loss)
            sched.step()
        """
    past = """\
        import git_flor as flor
        for step, batch in enumerate(loader):
            loss = train_step(batch)
            sched.step()
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == dedent(
        """\
        import git_flor as flor
        for step, batch in enumerate(loader):
            loss = train_step(batch)
            if step % 100 == 0:
                flor.log("loss", loss)
            sched.step()
        """
    )


def test_first_statement_of_block_goes_before_following_sibling() -> None:
    today = """\
        import git_flor as flor
        for epoch in range(10):
            flor.log("epoch_start", epoch)
            train(epoch)
        """
    past = """\
        import git_flor as flor
        for epoch in range(10):
            # train one epoch
            train(epoch)
        """
    res = prop(today, past)
    assert res.source == dedent(
        """\
        import git_flor as flor
        for epoch in range(10):
            # train one epoch
            flor.log("epoch_start", epoch)
            train(epoch)
        """
    )
    assert res.placements[0].anchor == "before line 4: train(epoch)"


def test_first_in_block_opens_the_same_block_even_if_next_statement_moved() -> None:
    today = """\
        import git_flor as flor
        for epoch in range(n):
            flor.log("epoch", epoch)
            setup(epoch)
            train(epoch)
        """
    past = """\
        import git_flor as flor
        for epoch in range(n):
            shuffle(data)
            train(epoch)
        setup(epoch)
        """
    res = prop(today, past)
    assert res.source == dedent(
        """\
        import git_flor as flor
        for epoch in range(n):
            flor.log("epoch", epoch)
            shuffle(data)
            train(epoch)
        setup(epoch)
        """
    )


def test_block_start_skips_the_docstring() -> None:
    today = "import git_flor as flor\ndef f(x):\n    flor.log('x', x)\n    return g(x)\n"
    past = 'import git_flor as flor\ndef f(x):\n    """Doc."""\n    y = 1\n    return g(x) + y\n'
    res = propagate_source(today, past)
    assert res.source == (
        'import git_flor as flor\ndef f(x):\n    """Doc."""\n    flor.log(\'x\', x)\n'
        "    y = 1\n    return g(x) + y\n"
    )


def test_rewritten_body_of_same_header_is_not_treated_as_new() -> None:
    today = """\
        import git_flor as flor
        def main(opt):
            check(opt)
            if opt.bucket:
                flor.log("bucket", opt.bucket)
                subprocess.run(["gsutil", "cp", f"gs://{opt.bucket}/evolve.csv", str(path)])
            run(opt)
        """
    past = """\
        import git_flor as flor
        def main(opt):
            check(opt)
            if opt.bucket:
                os.system('gsutil cp gs://%s/evolve.txt .' % opt.bucket)
            run(opt)
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == dedent(past).replace(
        "    if opt.bucket:\n", "    if opt.bucket:\n        flor.log(\"bucket\", opt.bucket)\n")


def test_body_block_follows_its_owner_not_the_code_that_moved_out() -> None:
    today = """\
        import git_flor as flor
        try:
            for epoch in range(start, end):
                flor.log("epoch", epoch)
                set_epoch(loader, epoch)
                if loader_eval is not None:
                    metrics = validate(model, loader_eval)
                    best = update(best, metrics)
                    save(model, metrics, best)
        except KeyboardInterrupt:
            pass
        """
    past = """\
        try:
            for epoch in range(start, end):
                if hasattr(data, 'set_epoch'):
                    data.set_epoch(epoch)
                metrics = validate(model, loader_eval)
                best = update(best, metrics)
                save(model, metrics, best)
        except KeyboardInterrupt:
            pass
        """
    res = prop(today, past)
    assert res.source == "import git_flor as flor\n" + dedent(past).replace(
        "end):\n", "end):\n        flor.log(\"epoch\", epoch)\n")


def test_block_whose_whole_body_changed_is_found_by_its_header() -> None:
    today = """\
        import git_flor as flor
        def main(args):
            model = build(args)
            if args.evaluate:
                flor.log("evaluate", args.evaluate)
                validate(val_loader, model, criterion, args)
                return
            train(model)
        """
    past = """\
        def main(args):
            model = build(args)
            if args.evaluate:
                validate(val_loader, model, criterion)
            else:
                train(model)
        """
    res = prop(today, past)
    assert res.ok, res.failures
    assert res.source == "import git_flor as flor\n" + dedent(past).replace(
        "    if args.evaluate:\n", "    if args.evaluate:\n        flor.log(\"evaluate\", args.evaluate)\n")

"""Spellings of flor statements (aliases, wrapped calls) and layouts of the past file
(tabs, CRLF, one-line blocks, decorators, async defs, match statements)."""

from __future__ import annotations

from textwrap import dedent

from git_flor.propagate import flor_alias, flor_statement_names, propagate_source


def test_alias_import_git_flor() -> None:
    today = "import git_flor\nx = f()\ngit_flor.log('x', x)\n"
    res = propagate_source(today, "import os\nx = f()\n")
    assert res.source == "import os\nimport git_flor\nx = f()\ngit_flor.log('x', x)\n"


def test_alias_from_import_log_as() -> None:
    today = "from git_flor import log as record\nx = f()\nrecord('x', x)\nprint(x)\n"
    res = propagate_source(today, "x = f()\nprint(x)\n")
    assert res.source == "from git_flor import log as record\nx = f()\nrecord('x', x)\nprint(x)\n"
    assert flor_statement_names(today) == ["x"]
    assert flor_alias(today).functions == frozenset({"record"})


def test_past_own_alias_counts_as_present() -> None:
    today = "import git_flor as flor\nx = f()\nflor.log('x', x)\n"
    past = "from git_flor import log\nx = f()\nlog('x', x)\n"
    assert propagate_source(today, past).source == past


def test_other_log_calls_are_not_flor_statements() -> None:
    src = "import logging as flor2\nimport git_flor as flor\nflor2.log(1, 'a')\nlog('b', 2)\nflor.log('c', 3)\n"
    assert flor_statement_names(src) == ["c"]


def test_wrapped_assignment_wraps_the_past_expression() -> None:
    today = dedent(
        """\
        import git_flor as flor
        def evaluate(model, data):
            acc = flor.log("acc", accuracy(model(data.x), data.y))
            return acc
        """
    )
    past = dedent(
        """\
        import git_flor as flor
        def evaluate(net, data):
            acc = accuracy(net(data.x), data.y)  # top-1
            return acc
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == past.replace(
        "acc = accuracy(net(data.x), data.y)", 'acc = flor.log("acc", accuracy(net(data.x), data.y))')
    assert res.placements[0].anchor == "wraps `accuracy(net(data.x), data.y)` at line 3"


def test_wrapped_call_nested_in_an_expression() -> None:
    today = "import git_flor as flor\nprint('lr', flor.log('lr', sched.get_lr()))\n"
    past = "import git_flor as flor\nprint('lr', sched.get_lr())\n"
    res = propagate_source(today, past)
    assert res.source == today


def test_wrapped_form_whose_statement_is_new_is_inserted_whole() -> None:
    today = "import git_flor as flor\nx = f()\nn = flor.log('n', len(x))\nprint(x)\n"
    past = "import git_flor as flor\nx = f()\nprint(x)\n"
    assert propagate_source(today, past).source == today


def test_flor_loop_and_arg_do_not_hide_the_match() -> None:
    today = dedent(
        """\
        import git_flor as flor
        lr = flor.arg("lr", 1e-3)
        for epoch in flor.loop("epoch", range(10)):
            loss = train(lr)
            flor.log("loss", loss)
        """
    )
    past = "lr = 1e-3\nfor epoch in range(10):\n    loss = train(lr)\n"
    res = propagate_source(today, past)
    assert res.source == (
        "import git_flor as flor\nlr = 1e-3\nfor epoch in range(10):\n"
        "    loss = train(lr)\n    flor.log(\"loss\", loss)\n"
    )


def test_tabs_are_kept() -> None:
    today = "import git_flor as flor\ndef f(x):\n    y = x + 1\n    flor.log('y',\n             y)\n    return y\n"
    past = "import git_flor as flor\ndef f(x):\n\tif x:\n\t\ty = x + 1\n\treturn y\n"
    res = propagate_source(today, past)
    assert res.source == (
        "import git_flor as flor\ndef f(x):\n\tif x:\n\t\ty = x + 1\n"
        "\t\tflor.log('y',\n\t\t         y)\n\treturn y\n"
    )


def test_crlf_line_endings_are_kept() -> None:
    today = "import git_flor as flor\nx = f()\nflor.log('x', x)\ny = 2\n"
    past = "import git_flor as flor\r\nx = f()\r\ny = 2\r\n"
    res = propagate_source(today, past)
    assert res.source == "import git_flor as flor\r\nx = f()\r\nflor.log('x', x)\r\ny = 2\r\n"


def test_no_trailing_newline() -> None:
    today = "import git_flor as flor\nx = f()\nflor.log('x', x)\n"
    res = propagate_source(today, "import git_flor as flor\nx = f()")
    assert res.source == "import git_flor as flor\nx = f()\nflor.log('x', x)\n"


def test_one_line_block() -> None:
    today = "import git_flor as flor\nfor i in r:\n    x = g(i)\n    flor.log('x', x)\n"
    past = "import git_flor as flor\nfor i in r: x = g(i)\n"
    res = propagate_source(today, past)
    assert res.source == "import git_flor as flor\nfor i in r: x = g(i); flor.log('x', x)\n"


def test_multiline_string_in_statement_is_not_reindented() -> None:
    today = 'import git_flor as flor\ndef f(x):\n    flor.log("""a\n  b""", x)\n    return x\n'
    past = "import git_flor as flor\nclass C:\n    def f(self, x):\n        return x\n"
    res = propagate_source(today, past)
    assert res.source == (
        "import git_flor as flor\nclass C:\n    def f(self, x):\n"
        '        flor.log("""a\n  b""", x)\n        return x\n'
    )


def test_decorators_async_and_match() -> None:
    today = dedent(
        """\
        import git_flor as flor

        @torch.no_grad()
        @cache
        async def evaluate(model, batch):
            out = await model(batch)
            match out:
                case {"loss": loss}:
                    value = loss.item()
                    flor.log("loss", value)
                case _:
                    pass
            return out
        """
    )
    past = dedent(
        """\
        @torch.no_grad()
        async def evaluate(model, batch):
            out = await model(batch)
            match out:
                case {"loss": loss}:
                    value = loss.item()
                case _:
                    pass
            return out
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == "import git_flor as flor\n" + past.replace(
        "value = loss.item()\n", "value = loss.item()\n            flor.log(\"loss\", value)\n")


def test_statement_after_decorated_function_definition() -> None:
    today = dedent(
        """\
        import git_flor as flor
        @dataclass
        class Config:
            lr: float = 0.1
        cfg = Config()
        flor.log("lr", cfg.lr)
        """
    )
    past = "class Config:\n    lr = 0.1\ncfg = Config()\n"
    res = propagate_source(today, past)
    assert res.source == (
        "import git_flor as flor\nclass Config:\n    lr = 0.1\ncfg = Config()\n"
        'flor.log("lr", cfg.lr)\n'
    )

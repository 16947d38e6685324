"""Anchors edited since the past version (arguments changed, right-hand side rewritten, the
block's owner rewritten around them): the statement follows the edited anchor, not its
unchanged neighbour. Snippets are trimmed from real histories (ultralytics/yolov5 train.py,
pytorch/examples mnist/main.py); each expected output is exact."""

from __future__ import annotations

from textwrap import dedent

from git_flor.propagate import propagate_source


def test_a_call_with_changed_arguments_in_a_block_whose_owner_was_rewritten() -> None:
    # Today's `if RANK in {-1, 0}` inside `def main` was `if opt.global_rank in [-1, 0]`
    # under `if __name__ == '__main__'`: no container above the call is matched, so only
    # its matched neighbour `check_git_status()` relates the blocks. The edited call is the
    # next statement there and calls the same function: it is the anchor.
    today = dedent(
        """\
        import sys
        import git_flor as flor


        def main(opt, callbacks=None):
            if RANK in {-1, 0}:
                print_args(vars(opt))
                check_git_status()
                check_requirements(ROOT / "requirements.txt")
                flor.log("python", sys.version)

            if opt.resume and not opt.evolve:
                last = Path(check_file(opt.resume))


        if __name__ == "__main__":
            opt = parse_opt()
            main(opt)
        """
    )
    past = dedent(
        """\
        import sys


        if __name__ == '__main__':
            opt = parser.parse_args()
            set_logging(opt.global_rank)
            if opt.global_rank in [-1, 0]:
                check_git_status()
                check_requirements()

            if opt.resume:
                last = get_latest_run()
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == past.replace(
        "import sys\n", "import sys\nimport git_flor as flor\n").replace(
        "        check_requirements()\n",
        '        check_requirements()\n        flor.log("python", sys.version)\n')
    [p] = res.placements
    assert p.anchor == "after line 9: check_requirements()"


def test_an_augmented_assignment_pairs_with_its_edit_not_the_assignment_before_it() -> None:
    # The past normalises `test_loss` twice; `test_loss = test_loss.data[0]` shares as many
    # identifiers with today's `test_loss /= len(...)` as the edited `/=` does, but only the
    # latter binds `test_loss` the same way: the log goes after the division, as today.
    today = dedent(
        """\
        import git_flor as flor


        def test(model, device, test_loader):
            model.eval()
            test_loss = 0
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    data, target = data.to(device), target.to(device)
                    output = model(data)
                    test_loss += F.nll_loss(output, target, reduction='sum').item()
                    pred = output.argmax(dim=1, keepdim=True)
                    correct += pred.eq(target.view_as(pred)).sum().item()

            test_loss /= len(test_loader.dataset)
            flor.log("test_loss", test_loss)

            print('Test set: Average loss: {:.4f}'.format(test_loss))
        """
    )
    past = dedent(
        """\
        def test(epoch):
            batch_data = torch.FloatTensor(opt.testBatchSize, 1, 28, 28)
            batch_data = Variable(batch_data, volatile=True)

            test_loss = 0
            correct = 0

            for i in range(0, test_data.size(0), opt.testBatchSize):
                batch_data.data[:] = test_data[i:i+opt.testBatchSize]
                output = model(batch_data)
                test_loss += criterion(output, batch_targets)
                pred = output.data.max(1)[1]
                correct += pred.long().eq(batch_targets.data.long()).cpu().sum()

            test_loss = test_loss.data[0]
            test_loss /= (test_data.size(0) / opt.testBatchSize) # criterion averages over batch size
            print('Test Set: Average loss: {:.4f}'.format(test_loss))
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == "import git_flor as flor\n" + past.replace(
        "# criterion averages over batch size\n",
        '# criterion averages over batch size\n    flor.log("test_loss", test_loss)\n')
    [p] = res.placements
    assert p.anchor.startswith("after line 16: test_loss /= (test_data.size(0)")

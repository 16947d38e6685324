"""Anchors edited since the past version (arguments changed, right-hand side rewritten, the
block's owner rewritten around them): the statement follows the edited anchor, not its
unchanged neighbour. Snippets are trimmed from real histories (ultralytics/yolov5 train.py,
pytorch/examples mnist/main.py, mlfoundations/open_clip src/training/main.py,
huggingface/accelerate examples/nlp_example.py); each expected output is exact."""

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


def test_a_lone_edited_call_pairs_with_its_clearly_closest_past_call() -> None:
    # Everything around today's `evaluate(...)` changed: the `if` above it, its neighbours,
    # even the function (today's `main` is paired with the past `main`, the code was in
    # `main_worker`). Of the three past `evaluate` calls, the one with `start_epoch` shares
    # clearly most of it.
    today = dedent(
        """\
        import logging
        import git_flor as flor


        def main(args):
            args = parse_args(args)
            random_seed(args.seed, 0)
            log_base_path = os.path.join(args.logs, args.name)
            os.makedirs(log_base_path, exist_ok=True)
            model, data, writer, tokenizer = setup(args)
            start_epoch = 0
            if 'train' not in data:
                # If using int8, convert to inference mode.
                if args.use_bnb_linear is not None:
                    model = convert_int8_model_to_inference_mode(model)
                evaluate(model, data, start_epoch, args, tb_writer=writer, tokenizer=tokenizer)
                flor.log("start_epoch", start_epoch)
                return

            for epoch in range(start_epoch, args.epochs):
                logging.info(f'Start epoch {epoch}')
                train_one_epoch(model, data, epoch, args, tb_writer=writer)
                evaluate(model, data, epoch + 1, args, tb_writer=writer, tokenizer=tokenizer)
        """
    )
    past = dedent(
        """\
        import logging


        def main_worker(gpu, ngpus_per_node, args):
            model, data, writer = setup(args)
            start_epoch = 0
            if args.train_data is None:
                evaluate(model, data, start_epoch, args, writer, 0)
                return
            elif start_epoch == 0 and args.val_data is not None:
                evaluate(model, data, 0, args, writer, 0)

            for epoch in range(start_epoch, args.epochs):
                if args.gpu == 0:
                    logging.info(f'Start epoch {epoch}')
                train(model, data, epoch, optimizer, scaler, scheduler, args, writer)
                steps = data["train"].dataloader.num_batches * (epoch + 1)
                if args.val_data is not None:
                    evaluate(model, data, epoch + 1, args, writer, steps)


        def main():
            args = parse_args()
            random_seed(args.seed, 0)
            log_base_path = os.path.join(args.logs, args.name)
            os.makedirs(log_base_path, exist_ok=True)
            main_worker(0, 1, args)
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == past.replace(
        "import logging\n", "import logging\nimport git_flor as flor\n").replace(
        "writer, 0)\n        return\n",
        'writer, 0)\n        flor.log("start_epoch", start_epoch)\n        return\n')
    [p] = res.placements
    assert p.anchor == "after line 8: evaluate(model, data, start_epoch, args, writer, 0)"


def test_a_statement_sharing_only_a_part_is_not_the_edited_anchor() -> None:
    # Today's `date_str = datetime.now().strftime(...)` holds the very call the past wrote
    # inside `args.name = '-'.join([...])`; it binds another name from another value, so it
    # is not that statement: `args.name = ...` is, and the log follows it.
    today = dedent(
        """\
        from datetime import datetime
        import git_flor as flor


        def main(args):
            device = init_distributed_device(args)

            # get the name of the experiments
            if args.name is None:
                # sanitize model name for filesystem / uri use, easier if we don't use / in name as a rule?
                model_name_safe = args.model.replace('/', '-')
                date_str = datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
                if args.distributed:
                    # sync date_str from master to all ranks
                    date_str = broadcast_object(args, date_str)
                args.name = '-'.join([
                    date_str,
                    f"model_{model_name_safe}",
                    f"lr_{args.lr}",
                    f"b_{args.batch_size}",
                    f"j_{args.workers}",
                    f"p_{args.precision}",
                ])
                flor.log("run_name", args.name)

            log_base_path = os.path.join(args.logs, args.name)
        """
    )
    past = dedent(
        """\
        from datetime import datetime


        def main_worker(gpu, ngpus_per_node, log_queue, args):
            if torch.cuda.is_available():
                device = 'cuda'
                if args.distributed:
                    device += ':%d' % local_rank
                torch.cuda.set_device(device)
            else:
                device = 'cpu'
            args.device = device

            # get the name of the experiments
            if args.name is None:
                args.name = '-'.join([
                    datetime.now().strftime("%Y_%m_%d-%H_%M_%S"),
                    f"model_{args.model}",
                    f"lr_{args.lr}",
                    f"b_{args.batch_size}",
                    f"j_{args.workers}",
                    f"p_{args.precision}",
                ])

            # Log and save params.
            args.log_path = os.path.join(args.logs, args.name, f"out-{local_rank}.log")
        """
    )
    res = propagate_source(today, past)
    assert res.ok, res.failures
    assert res.source == past.replace(
        "from datetime import datetime\n",
        "from datetime import datetime\nimport git_flor as flor\n").replace(
        'f"p_{args.precision}",\n        ])\n',
        'f"p_{args.precision}",\n        ])\n        flor.log("run_name", args.name)\n')
    [p] = res.placements
    assert p.anchor == "after line 16: args.name = '-'.join(["


def test_an_inline_epoch_body_today_was_a_helper_called_in_the_past_loop() -> None:
    # The past ran the epoch body in `train_epoch(...)`, called once per epoch; today it is
    # inline. The per-step statement goes into the helper's step loop: the same nesting,
    # since the helper is called in the image of `for epoch`. The per-epoch statement opens
    # the image of its block, the helper's body (where all its statements went), and `epoch`
    # is not bound there: it fails with that reason rather than land elsewhere.
    today = dedent(
        """\
        import git_flor as flor


        def training_function(config, args):
            model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
                model, optimizer, train_dataloader, eval_dataloader
            )
            for epoch in range(num_epochs):
                flor.log("epoch", epoch)
                model.train()
                for step, batch in enumerate(train_dataloader):
                    flor.log("step", step)
                    batch.to(accelerator.device)
                    outputs = model(**batch)
                    loss = outputs.loss
                    loss = loss / gradient_accumulation_steps
                    accelerator.backward(loss)
                    if step % gradient_accumulation_steps == 0:
                        optimizer.step()
                        lr_scheduler.step()
                        optimizer.zero_grad()

                model.eval()
                for step, batch in enumerate(eval_dataloader):
                    batch.to(accelerator.device)
                    with torch.no_grad():
                        outputs = model(**batch)
                    predictions = outputs.logits.argmax(dim=-1)
                    metric.add_batch(predictions=predictions, references=batch["labels"])

                eval_metric = metric.compute()
                accelerator.print(f"epoch {epoch}:", eval_metric)
        """
    )
    past = dedent(
        '''\
        def train_epoch(
            model, accelerator, optimizer, lr_scheduler, train_dataloader, eval_dataloader, metric, gradient_accumulation_steps
        ):
            """
            This method train the model for one epoch and evaluate it at the end.
            """
            model.train()
            for step, batch in enumerate(train_dataloader):
                batch.to(accelerator.device)
                outputs = model(**batch)
                loss = outputs.loss
                loss = loss / gradient_accumulation_steps
                accelerator.backward(loss)
                if step % gradient_accumulation_steps == 0:
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()

            model.eval()
            for step, batch in enumerate(eval_dataloader):
                batch.to(accelerator.device)
                outputs = model(**batch)
                predictions = outputs.logits.argmax(dim=-1)
                metric.add_batch(predictions=gather(predictions), references=gather(batch["labels"]))

            return metric.compute()


        def training_function(config):
            model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
                model, optimizer, train_dataloader, eval_dataloader
            )
            for epoch in range(num_epochs):
                eval_metric = train_epoch(
                    model,
                    accelerator,
                    optimizer,
                    lr_scheduler,
                    train_dataloader,
                    eval_dataloader,
                    metric,
                    gradient_accumulation_steps,
                )
                # Use accelerator.print to print only on the main process.
                accelerator.print(f"epoch {epoch}:", eval_metric)
        '''
    )
    res = propagate_source(today, past)
    assert res.source == "import git_flor as flor\n" + past.replace(
        "    for step, batch in enumerate(train_dataloader):\n",
        '    for step, batch in enumerate(train_dataloader):\n        flor.log("step", step)\n')
    assert [p.anchor for p in res.placements] == ["before line 9: batch.to(accelerator.device)"]
    assert [(f.name, f.reason) for f in res.failures] == [
        ("epoch", "reads `epoch`, which is not defined in scope at line 7 of the past version")]

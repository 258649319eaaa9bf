"""``spray init``: write a commented config for a dataset and a model, check it, print the next command."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any


def run_command(args: argparse.Namespace) -> int:
    """``spray init``: write a commented audit config from a dataset and a model, and check it on one batch."""
    from spray.errors import SprayError
    from spray.init_output import mark_failed
    from spray.model_facts import parse_model_args
    from spray.scaffold import check_config, scaffold_config

    out = Path(args.output)
    notes = scaffold_config(
        args.data,
        args.model,
        out,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        checkpoint_key=args.checkpoint_key,
        labels=Path(args.labels) if args.labels else None,
        num_classes=args.num_classes,
        force=args.force,
        model_kwargs=parse_model_args(args.model_arg),
        transform_args=parse_model_args(args.transform, "--transform"),
    )
    sys.stdout.write(f"wrote {out}\n" + "".join(f"  {n}\n" for n in notes))
    if not args.no_check:
        try:
            checked = check_config(out, with_model=args.model is not None)
        except SprayError:
            mark_failed(out)
            sys.stderr.write(
                f"{out} is kept, marked as failed: fix the problem below and rerun spray init, or, for a setting "
                f"init has no option for (model.output, say), edit {out} and run spray audit --config {out} "
                "(a rerun of spray init overwrites the file it marked as failed until you edit it).\n"
            )
            raise
        for line in checked:
            # spray cannot know the accuracy the model was trained to: that line is the user's to judge
            sys.stdout.write(f"  {line}\n" if line.startswith("CHECK") else f"  ok: {line}\n")
        if args.model is None:
            sys.stdout.write(
                "  model: not checked; replace the placeholder in the file (or rerun with --model)\n"
            )
    sys.stdout.write(
        f"\nNext: spray audit --config {shlex.quote(str(out))}\n"
        "      (the ranked findings are printed at the end; open them with "
        f"spray dashboard --runs-dir {shlex.quote(str(out.parent / 'runs'))})\n"
    )
    return 0


def _positive(text: str) -> int:
    from spray.cli.options import positive_int

    return positive_int(text)


def register(subparsers: Any) -> None:
    """Add ``spray init``."""
    p = subparsers.add_parser(
        "init",
        help="write a first config for your data and model, and check it on one batch",
        description=run_command.__doc__,
    )
    p.add_argument(
        "--data",
        required=True,
        help="an image folder (root/<class>/<image>), an IDX images file, or a dataset factory pkg.module:function",
    )
    p.add_argument(
        "--model",
        help="a torchvision or timm architecture name (e.g. resnet18), or a factory pkg.module:function",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of the model's constructor, repeatable; VALUE is read as YAML "
        "(e.g. --model-arg in_chans=1 --model-arg global_pool=max)",
    )
    p.add_argument(
        "--transform",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data.transform setting the model was trained with, replacing init's guess; repeatable, VALUE "
        "read as YAML, none removes it (e.g. --transform mean=none --transform std=none for unnormalised "
        "inputs, --transform resize=32)",
    )
    p.add_argument("--checkpoint", help="the model's state-dict file (torch.save(model.state_dict(), path))")
    p.add_argument(
        "--checkpoint-key",
        help="where the weights are in a checkpoint holding several networks: a dict entry (state_dict_ema) or a "
        "key prefix (model., ema_model.); '' for the keys without a prefix",
    )
    p.add_argument("--labels", help="the IDX labels file (default: found next to the images file)")
    p.add_argument("--num-classes", type=_positive, help="number of classes (default: from the data)")
    p.add_argument("-o", "--output", default="spray.yaml", help="config file to write (default ./spray.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    p.add_argument("--no-check", action="store_true", help="write the config without loading a batch")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and results only")
    p.set_defaults(func=run_command)

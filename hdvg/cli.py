"""`hdvg` command line: curate, sample, validate, stats, plan, caption, and the models' commands (model/cli.py).
`python -m pipelines.curate` takes curate's arguments."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from types import UnionType
from typing import Literal, Union, get_args, get_origin

from hdvg.config import ConfigError, build_config, leaf_fields
from hdvg.lock import OutLocked


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return lowered in ("true", "1", "yes")


def _flag_options(info) -> dict:
    """argparse options of a config field's flag: its value type (the non-None member of Optional[...]),
    a Literal's choices; a bool flag given bare means true (`--audio`), a retry mode bare means
    'transient' (`--retry-failed`)."""
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and args:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        options = {"type": type(choices[0]), "choices": choices}
        if "transient" in choices:
            options.update(nargs="?", const="transient")
        return options
    if annotation is bool:
        return {"type": _bool, "nargs": "?", "const": True, "metavar": "true|false"}
    if get_origin(annotation) is dict:
        return {"type": json.loads, "metavar": "JSON"}
    return {"type": annotation if annotation in (int, float, str) else str}


FLAG_NAMES = {"captioner.name": "captioner", "captioner.model": "captioner_model"}


def add_config_flags(parser: argparse.ArgumentParser, section: str = "") -> None:
    """One flag per config field (of `section` only, when given), `--leaf-name` (`--section-leaf-name`
    where two sections share a leaf), plus --set and --config."""
    parser.add_argument("--config", help="YAML or JSON file with config sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any field by its dotted name, e.g. --set clip.max_clip_seconds=10")
    fields = [(d, i) for d, i in leaf_fields() if d not in ("input", "output")]
    leaves = Counter(d.split(".")[-1] for d, _ in fields)
    for dotted, info in [(d, i) for d, i in fields if d.startswith(section)]:
        leaf = dotted.split(".")[-1]
        name = FLAG_NAMES.get(dotted) or (dotted.replace(".", "_") if leaves[leaf] > 1 else leaf)
        default = info.default if info.default_factory is None else info.default_factory()
        parser.add_argument(f"--{name.replace('_', '-')}", dest=dotted, default=None, **_flag_options(info),
                            help=f"{info.description} [{dotted}, default {default!r}]")


def _config_from(args: argparse.Namespace):
    values = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    values.update(input=args.input, output=args.output)
    return build_config(args.config, values, args.set)


def cmd_curate(args: argparse.Namespace) -> int:
    cfg = _config_from(args)  # validated before Ray or any work starts
    from hdvg.pipeline import run_curation

    stats = run_curation(cfg)
    by = stats["videos_by_status"]
    print(f"hdvg: {stats['videos']} videos (ok {by.get('ok', 0)}, filtered {by.get('filtered', 0)}, "
          f"failed {by.get('failed', 0)}) -> {stats['clips']} clips in {stats['shards']} shards, "
          f"{stats['hours_out'] * 3600:.1f} s of clips from {stats['hours_in'] * 3600:.1f} s of video, "
          f"at {stats['last_run']['video_seconds_per_wall_second']:.2f} video-s/s -> {cfg.output}")
    if cfg.captioner.name == "none":
        print("hdvg: captioner 'none': clips are uncaptioned (caption null, captioner \"none\").")
    elif stats["last_run"].get("uncaptioned"):
        print(f"hdvg: UNCAPTIONED (captioner.on_missing_weights=uncaptioned): {stats['last_run']['uncaptioned']}; "
              f"clips say captioner {stats['last_run']['captioner']!r}.")
    for reason, n in list(stats["reasons"].items())[:10]:
        print(f"  {n} x {reason}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from hdvg.sample import make_sample

    truth = make_sample(args.out)
    print(f"hdvg: {len(truth)} sample videos in {args.out} (truth.json lists their cuts)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from hdvg.validate import validate

    problems, summary = validate(args.out)
    for p in problems[:50]:
        print(p)
    print(("OK " if not problems else "FAIL ") + json.dumps(summary))
    return 0 if not problems else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from hdvg.stats import dataset_stats, format_summary, write_figures, write_summary

    stats = dataset_stats(args.out)
    from hdvg.storage import is_remote

    # figures are local files: next to a local OUT, else in ./figures
    dest = args.figures or ("figures" if is_remote(args.out) else f"{args.out}/figures")
    write_figures(stats, dest)
    print(format_summary(stats))
    print(f"hdvg: figures and summary.json in {write_summary(stats, dest).parent}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from hdvg.plan import capacity_plan, format_plan, plan_inputs

    print(format_plan(capacity_plan(plan_inputs(args.set))))
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k.startswith("captioner.") and v is not None}
    values = {"captioner.name": "blip2", **values, "input": args.out, "output": args.out}
    cfg = build_config(args.config, values, args.set).captioner
    from hdvg.recaption import recaption

    got = recaption(args.out, cfg, args.name, args.shards, args.max_shards)
    print(f"hdvg: {got['shards_done']} shards ({got['clips']} clips) captioned by {got['captioner']} at "
          f"{got['keyframes_per_second']} keyframes/s; {got['shards_total']} shards in all -> {got['folder']}")
    return 0


def curate_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--input", "-i", required=True, help="directory of videos or a manifest")
    parser.add_argument("--output", "-o", required=True, help="output folder OUT")
    add_config_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hdvg", description="HD-VG-130M curation")
    sub = parser.add_subparsers(dest="command", required=True)
    curate_parser(sub.add_parser("curate", help="curate videos into WebDataset shards"))
    sp = sub.add_parser("sample", help="generate the built-in sample videos")
    sp.add_argument("out", nargs="?", default="data/sample_videos")
    vp = sub.add_parser("validate", help="check an OUT folder against the output contract")
    vp.add_argument("out")
    stp = sub.add_parser("stats", help="dataset statistics and Figure 2 plots of an OUT, from its index")
    stp.add_argument("out")
    stp.add_argument("--figures", help="folder for the PNGs and summary.json (default OUT/figures)")
    pp = sub.add_parser("plan", help="cluster, days and cost of the full HD-VG-130M (docs/scale.md)")
    pp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a plan input of hdvg.plan.PlanInputs, e.g. --set target_days=3")
    cp = sub.add_parser("caption", help="caption the shards of an OUT again (table, optionally new shards)")
    cp.add_argument("out")
    cp.add_argument("--name", help="pass name: OUT/captions/NAME (default: the model's folder or repo name)")
    cp.add_argument("--shards", action="store_true", help="also write shards with the new captions")
    cp.add_argument("--max-shards", type=int, help="caption at most this many more shards (a rerun goes on)")
    add_config_flags(cp, section="captioner.")
    from model.cli import register as register_model_commands

    handlers = {"curate": cmd_curate, "sample": cmd_sample, "validate": cmd_validate,
                "stats": cmd_stats, "plan": cmd_plan, "caption": cmd_caption, **register_model_commands(sub)}
    args = parser.parse_args(argv)
    handler = handlers[args.command]
    try:
        return handler(args)
    except ConfigError as exc:  # a usage error: the message names the bad field
        print(f"hdvg {args.command}: {exc}", file=sys.stderr)
        return 2
    except OutLocked as exc:  # another job writes this OUT
        print(f"hdvg {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

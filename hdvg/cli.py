"""`hdvg` command line: curate, sample, validate, stats, plan, caption, and the commands that installed packages
register in the `hdvg.commands` entry-point group (the model stack's train, sample-video, ...: model/cli.py).
`python -m pipelines.curate` takes curate's arguments.

Curation never imports the model package: a curation command loads no plugin at all, and a plugin whose
package is not installed (the curation image copies no `model/`) is left out with its reason."""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections import Counter
from importlib.metadata import entry_points
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


def private_cluster_auth(cfg) -> None:
    """A job that starts its own local Ray cluster gets token authentication (Ray's default) set explicitly,
    with a fresh token of that cluster's own in the environment its processes inherit: nothing is written to
    ~/.ray and Ray does not warn. Ray reads the mode when it is imported, so this runs before; a user's own
    RAY_AUTH_MODE, and jobs that join a cluster (`--address`, RAY_ADDRESS, `ray job submit`), keep Ray's
    defaults."""
    joins = cfg.run.address not in (None, "local") or os.environ.get("RAY_ADDRESS")
    if joins or "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def cmd_curate(args: argparse.Namespace) -> int:
    cfg = _config_from(args)  # validated before Ray or any work starts
    private_cluster_auth(cfg)
    from hdvg.download import YouTubeNotReady
    from hdvg.pipeline import run_curation

    try:
        stats = run_curation(cfg)
    except YouTubeNotReady as exc:  # what is committed stays; a rerun goes on from it
        print(f"hdvg curate: stopped: {exc}", file=sys.stderr)
        return 1
    by = stats["videos_by_status"]
    print(f"hdvg: {stats['videos']} videos (ok {by.get('ok', 0)}, filtered {by.get('filtered', 0)}, "
          f"failed {by.get('failed', 0)}) -> {stats['clips']} clips in {stats['shards']} shards, "
          f"{stats['hours_out'] * 3600:.1f} s of clips from {stats['hours_in'] * 3600:.1f} s of video, "
          f"at {stats['last_run']['video_seconds_per_wall_second']:.2f} video-s/s -> {cfg.output}")
    if stats["last_run"].get("youtube"):
        yt = stats["last_run"]["youtube"]
        print(f"hdvg: YouTube downloads by yt-dlp {yt['yt_dlp']} with {yt['js_runtime']} "
              f"(challenge solver: {', '.join(yt['challenge_providers'])})")
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


def cmd_score(args: argparse.Namespace) -> int:
    from hdvg.scoring import ScoreConfig, build_score_config, score

    values = {name: getattr(args, f"score_{name}") for name in ScoreConfig.model_fields}
    for got in score(args.out, build_score_config(args.config, values, args.set), args.max_shards):
        extra = (f"; features {got['features']}" + (f", {got['search']} search at cosine >= {got['threshold']}: "
                 f"{got['duplicates']} duplicates in {got['groups']} groups" if got.get("grouped") else
                 ", groups wait for the remaining shards") if got["scorer"] == "dedup" else "")
        print(f"hdvg: {got['scorer']}: {got['shards_done']} shards ({got['clips']} clips) scored, "
              f"{got['shards_total']} shards in all{extra} -> {got['folder']}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from hdvg.query import format_selection, select

    print(format_selection(select(args.out, args.where, args.output)))
    return 0


def curate_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--input", "-i", required=True, help="directory of videos or a manifest")
    parser.add_argument("--output", "-o", required=True, help="output folder OUT")
    add_config_flags(parser)
    return parser


PLUGIN_GROUP = "hdvg.commands"
MODEL_EXTRA = "pip install 'hdvg[model]'"


def load_plugins(sub: argparse._SubParsersAction, handlers: dict) -> dict[str, str]:
    """Add the commands of every `hdvg.commands` entry point (`register(subparsers) -> {command: handler}`) to
    `handlers`; return {entry point: reason} for those whose package does not import here."""
    unavailable, seen = {}, set()
    for point in entry_points(group=PLUGIN_GROUP):
        if point.name in seen:  # an editable and a regular install of the same distribution
            continue
        seen.add(point.name)
        try:
            register = point.load()
        except ImportError as exc:
            unavailable[point.name] = f"{type(exc).__name__}: {exc}"
            continue
        handlers.update(register(sub))
    return unavailable


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
    scp = sub.add_parser("score", help="score the clips of an OUT (clip-caption match, aesthetics, near-duplicates)")
    scp.add_argument("out")
    scp.add_argument("--config", help="YAML or JSON file with a `score` section")
    scp.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a score field")
    scp.add_argument("--max-shards", type=int, help="score at most this many more shards per scorer (a rerun goes on)")
    from hdvg.scoring import ScoreConfig

    for name, info in ScoreConfig.model_fields.items():
        options = {"type": str} if name == "scorers" else _flag_options(info)
        if "choices" not in options:
            options.setdefault("metavar", name.split("_")[-1].upper())
        scp.add_argument(f"--{name.replace('_', '-')}", dest=f"score_{name}", default=None, **options,
                         help=f"{info.description} [default {info.get_default(call_default_factory=True)!r}]")
    fp = sub.add_parser("filter", help="the clips an SQL predicate over the index and scores keeps (read time)")
    fp.add_argument("out")
    fp.add_argument("--where", required=True, help="DuckDB expression over index and score columns, e.g. "
                    "\"aesthetic >= 4.75 AND duplicate_of IS NULL\"")
    fp.add_argument("--output", help="write the kept clips' index rows and scores to this parquet file")
    handlers = {"curate": cmd_curate, "sample": cmd_sample, "validate": cmd_validate,
                "stats": cmd_stats, "plan": cmd_plan, "caption": cmd_caption, "score": cmd_score,
                "filter": cmd_filter}
    curation = set(handlers)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in curation:  # a plugin's command, --help or a typo: only then are plugins loaded
        unavailable = load_plugins(sub, handlers)
        if command is not None and command not in handlers and unavailable:
            print(f"hdvg: no command {command!r} here; command plugins that could not load: "
                  + "; ".join(f"{name} ({why})" for name, why in unavailable.items())
                  + f". The model commands need hdvg installed with its model package and extra: {MODEL_EXTRA}",
                  file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    handler = handlers[args.command]
    try:
        return handler(args)
    except ModuleNotFoundError as exc:  # a plugin's command run without its stack (`hdvg train` on a curation node)
        if args.command in curation:
            raise
        print(f"hdvg {args.command}: {exc}; install the stack it needs: {MODEL_EXTRA}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # a usage error: the message names the bad field
        print(f"hdvg {args.command}: {exc}", file=sys.stderr)
        return 2
    except OutLocked as exc:  # another job writes this OUT
        print(f"hdvg {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

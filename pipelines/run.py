"""vlm-adapt command line: image-caption shards -> domain instruction dataset (-> adapted model).

Exit codes: 0 done, 2 bad config or unreadable input (one line, before any model loads), 1 other failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EMBEDDED_PROFILES = ("demo", "tiny")  # profiles that run on the embedded sample data when --input is not given

EPILOG = """\
overrides:
  Any config field as dotted key=value after the options, e.g.
    synth.max_tokens=256 synth.replicas=4 synth.tensor_parallel_size=2 judge.keep_labels=[yes]
  Values are parsed as YAML. Unknown keys and bad values fail with exit code 2.

examples:
  make demo                                   # = vlm-adapt --domain biomed --profile demo --out out/demo
  run.py --domain biomed --input data/image_caption_pairs.json --image-root data/images --out out/biomed
  run.py --domain food --input shards/ --stages ingest,synth,judge,mix --push-to-hub my-org/food-tasks
"""


def build_parser() -> argparse.ArgumentParser:
    from pipelines.config import STAGES, builtin_config_names

    p = argparse.ArgumentParser(
        prog="vlm-adapt",
        description="Turn image-caption pairs into a domain instruction dataset: synthesize tasks with a visual "
        "instruction synthesizer, keep consistent ones, mix them with captions, and optionally post-train.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--domain", default="biomed",
                   help=f"Built-in domain config ({', '.join(builtin_config_names())}) or a path to a YAML config. "
                        "Default: biomed.")
    p.add_argument("--profile", default=None,
                   help="Profile overlay, e.g. 'tiny': offline tiny models and the embedded sample data.")
    p.add_argument("--input", default=None,
                   help="Input: JSON file, folder, Parquet, WebDataset tar(s), or datasets dir/hub id. "
                   "Default with --profile demo or tiny: the embedded sample data.")
    p.add_argument("--image-root", default=None, help="Folder image paths are relative to (JSON/Parquet inputs).")
    p.add_argument("--out", default=None, help="Output folder. Default: out/<domain>.")
    p.add_argument("--stages", default=None,
                   help=f"Comma-separated subset of {','.join(STAGES)} (ingest always runs). Default: from config.")
    p.add_argument("--dry-run", action="store_true",
                   help="Validate config and input, print the plan, load no model, write nothing.")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None,
                   help="Publish the dataset to this Hub repo (private by default; token from HF_TOKEN or login).")
    p.add_argument("--no-resume", action="store_true",
                   help="Refuse to continue an existing run in --out (default: resume, skipping written ids).")
    p.add_argument("--overwrite", action="store_true", help="Delete an existing dataset in --out first.")
    p.add_argument("--no-progress", action="store_true", help="Do not draw the progress bar.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Config overrides (see below).")
    return p


def resolve(args: argparse.Namespace):
    """Config + input checks. Raises ConfigError / InputError (exit 2) before any model loads."""
    from pipelines.config import load_config

    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    if args.input:
        overrides.append(f"input.path={args.input}")
    if args.image_root:
        overrides.append(f"input.image_root={args.image_root}")
    cfg = load_config(args.domain, args.profile, overrides)
    if cfg.input.path is None:
        if args.profile not in EMBEDDED_PROFILES:
            from pipelines.config import ConfigError

            raise ConfigError("no input: pass --input PATH (or --profile demo|tiny for the embedded sample data)")
        from pipelines.fixtures.sample_data import ensure_sample

        cfg.input.path = str(ensure_sample(cfg.domain if cfg.domain in ("biomed", "food") else "biomed"))
    out = Path(args.out or f"out/{cfg.domain}")
    return cfg, out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may sit between options
    if not os.environ.get("RAY_ADDRESS"):
        # Token auth is already Ray's default for a local cluster; saying so explicitly (before Ray is
        # imported) stops ray.init from printing a notice about it on every run.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    # Each engine actor prints the same few lines; deduplicated, Ray adds a "[repeated Nx across cluster]
    # (Ray deduplicates logs by default ...)" banner to them. Print each with its actor's prefix instead.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipelines.config import ConfigError
    from pipelines.manifest import ResumeMismatchError
    from pipelines.sources import InputError, check_input

    try:
        cfg, out = resolve(args)
        fmt = check_input(cfg.input)
    except (ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        import json

        from pipelines.manifest import MANIFEST, Manifest
        from pipelines.pipeline import make_plan

        # Read-only view of an existing run (Manifest.open would delete orphan parts).
        mf = out / MANIFEST
        done = len(Manifest(out, json.loads(mf.read_text())).committed_ids()) if mf.exists() else 0
        print(make_plan(cfg, out, fmt, done).describe())
        return 0
    from pipelines.app import run_all
    from pipelines.refs import resolve_run

    try:
        # model references (tiny://, miniworld://) become local paths here, once, before any stage is built
        return run_all(resolve_run(cfg), out, args)
    except ResumeMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

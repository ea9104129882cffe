"""``curate`` command line: ``curate run PIPELINE.yaml --input ... --output DIR``, ``curate dedup INPUT...
--output DIR``, ``curate shards build|inspect|decode|train-smoke``, ``curate classifiers ...``, ``curate
decontam build|inspect``, ``curate audit DIR``, ``curate stages``.

Exit codes: 0 success; 1 the run finished but conservation failed, inputs could not be processed (re-run
to retry them) or the failure policy was exceeded, or the run stopped on a file it could not write or read
(a full disk, a read-only output); 2 invalid configuration or inputs, reported before any work starts.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time

from curate.config import ConfigError, RuntimeProfile, load_pipeline, load_profile
from curate.io.fs import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description="Curate web crawls into pretraining corpora.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline over WARC inputs")
    run.add_argument("pipeline", help="pipeline YAML, or a built-in recipe's name: fineweb, quickstart")
    run.add_argument("--input", "-i", nargs="+", required=True,
                     help="WARC paths, globs, directories, s3:// or https:// URLs, or a Common Crawl listing "
                     "(warc.paths.gz: local, s3:// or https://)")
    run.add_argument("--output", "-o", required=True, help="output folder (local path or s3://...)")
    run.add_argument("--listing-base", default=None, help="what a listing's relative paths are resolved against "
                     "(default: the profile's listing_base_url, https://data.commoncrawl.org/)")
    run.add_argument("--shard", default=None, metavar="K/N", help="take every N-th input from the K-th (0-based), "
                     "e.g. 0/100; shards 0..N-1 are disjoint and cover the inputs")
    run.add_argument("--limit", type=int, default=None, metavar="N", help="then only the first N inputs")
    dedup = sub.add_parser("dedup", help="exact + MinHash near-duplicate removal over a Parquet/JSONL corpus",
                           description="Runs jsonl_read/parquet_read, exact_dedup and minhash_dedup, with the same "
                           "kept/, removed/, stats/ layout and conservation check as `curate run`.")
    dedup.add_argument("inputs", nargs="*", help="Parquet or JSONL(.gz/.zst) files, globs, directories, s3:// URLs")
    dedup.add_argument("--output", "-o", help="output folder (local path or s3://...)")
    dedup.add_argument("--format", choices=["auto", "jsonl", "parquet"], default="auto",
                       help="input format (auto: parquet if the inputs end in .parquet)")
    dedup.add_argument("--text-column", default="text", help="field holding the text (dotted path for nested)")
    dedup.add_argument("--id-column", default="id", help="field holding a stable id (missing: <path>@<row>)")
    dedup.add_argument("--url-column", default="url", help="field holding the URL")
    dedup.add_argument("--date-column", default=None, help="field holding the crawl date (keep: earliest)")
    dedup.add_argument("--no-exact", action="store_true", help="skip exact_dedup (MinHash only)")
    dedup.add_argument("--threshold", type=float, default=None, help="Jaccard of a duplicate (default 0.8)")
    dedup.add_argument("--bands", type=int, default=None, help="LSH bands (default 20)")
    dedup.add_argument("--rows", type=int, default=None, help="hashes per band (default 6)")
    dedup.add_argument("--ngram", type=int, default=None, help="words per shingle (default 5)")
    dedup.add_argument("--no-verify", action="store_true", help="judge removals by the signature estimate instead "
                       "of the exact Jaccard")
    dedup.add_argument("--keep", choices=["earliest", "longest", "min_id"], default=None,
                       help="the representative kept of each group (default earliest)")
    dedup.add_argument("--against", nargs="+", default=[], metavar="OUT_DIR",
                       help="also remove documents that duplicate the kept documents of these earlier runs")
    dedup.add_argument("--explain", action="store_true", help="print the LSH S-curve of these settings and exit")
    for p in (run, dedup):
        _run_options(p)
    from curate.classify.cli import add_parser as add_classifiers
    from curate.decontam.cli import add_parser as add_decontam
    from curate.shards.cli import add_parser as add_shards

    add_classifiers(sub)
    add_shards(sub, _run_options)
    add_decontam(sub)
    stages = sub.add_parser("stages", help="list the registered stages")
    stages.set_defaults(command="stages")
    from curate.audit.cli import add_parser as add_audit

    add_audit(sub)
    return parser


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not sep or not k.isdigit() or not n.isdigit() or int(n) < 1:
        raise ConfigError(f"--shard {value}: expected K/N with 0 <= K < N, e.g. 0/100")
    return int(k), int(n)


def _run_options(p: argparse.ArgumentParser) -> None:
    """What every command that runs a pipeline takes."""
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, "
                   "else start an embedded local Ray)")
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    p.add_argument("--config", default=None, help="runtime profile YAML (see configs/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true", help="print where the time went (start-up, each step, "
                   "the ledger); always recorded in run.json")


def main(argv: list[str] | None = None) -> int:
    """The ``curate`` command; output piped into ``head`` that closes early ends it quietly, as ``grep`` does."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be caught
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 141  # 128 + SIGPIPE


def _main(argv: list[str] | None) -> int:
    from curate.audit.cli import with_default_command

    started = time.time()
    args = _parser().parse_args(with_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "stages":
        from curate.registry import known_stages

        print("\n".join(known_stages()))
        return 0
    if args.command == "classifiers":
        from curate.classify.cli import run as run_classifiers

        return run_classifiers(args)
    if args.command == "shards" and args.action != "build":
        from curate.shards.cli import run as run_shards

        return run_shards(args)
    if args.command == "decontam":
        from curate.decontam.cli import run as run_decontam

        return run_decontam(args)
    if args.command == "audit":
        from curate.audit.cli import run as run_audit

        return run_audit(args)
    if args.command == "dedup" and args.explain:
        from curate.dedup.minhash import MinHashParams, explain

        try:
            print(explain(MinHashParams(**_minhash_options(args))))
        except ValueError as exc:
            print(f"curate: error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.command == "dedup":
            pipeline, inputs = _dedup_pipeline(args), args.inputs
        elif args.command == "shards":
            from curate.shards.cli import build_pipeline

            pipeline, inputs = build_pipeline(args), args.inputs
        else:
            pipeline, inputs = load_pipeline(args.pipeline), args.input
        profile = load_profile(args.config)
        overrides = {k: v for k, v in (("ray_address", args.ray_address), ("workers", args.workers),
                                       ("listing_base_url", getattr(args, "listing_base", None))) if v}
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers: expected a positive integer, got {args.workers}")
        profile = RuntimeProfile(**{**profile.model_dump(), **overrides})
        from curate.runner import Runner

        runner = Runner(pipeline, inputs, args.output, profile, progress=not args.no_progress,
                        shard=_shard(getattr(args, "shard", None)), limit=getattr(args, "limit", None))
        loaded = time.time() - started  # imports, the pipeline's stages and the input listing
    except (ConfigError, InputError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = runner.run()
    except ConfigError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the driver's own writes (run.json, round markers) on a full or read-only output
        where = f": {exc.filename}" if exc.filename else ""
        print(f"curate: error: {exc.strerror or exc}{where} (the run stopped; what it committed is kept, a re-run "
              "resumes there)", file=sys.stderr)
        return 1
    _print_summary(result, args.output)
    if args.profile:
        timings = {"load_s": loaded, **result.profile}
        print("profile: " + ", ".join(f"{k}={v:.2f}s" for k, v in timings.items()))
    return 0 if result.ok else 1


def _minhash_options(args: argparse.Namespace) -> dict:
    names = {"threshold": "threshold", "bands": "bands", "rows": "rows", "ngram": "ngram", "keep": "keep"}
    options = {param: getattr(args, arg) for arg, param in names.items() if getattr(args, arg) is not None}
    if args.no_verify:
        options["verify"] = False
    if args.against:
        options["against"] = args.against
    return options


def _dedup_pipeline(args: argparse.Namespace):
    """The stand-alone dedup pipeline: a corpus reader, exact_dedup, minhash_dedup."""
    from curate.config import pipeline_from_dict

    if not args.inputs or not args.output:
        raise ConfigError("dedup: give INPUT... and --output (or --explain)")
    fmt = args.format
    if fmt == "auto":
        fmt = "parquet" if all(".parquet" in i or i.rstrip("/").endswith("kept") for i in args.inputs) else "jsonl"
    reader = {"text": args.text_column, "id": args.id_column, "url": args.url_column, "fetch_time": args.date_column}
    stages = [{f"{fmt}_read": reader}]
    if not args.no_exact:
        stages.append({"exact_dedup": {"keep": args.keep} if args.keep else {}})
    stages.append({"minhash_dedup": _minhash_options(args)})
    return pipeline_from_dict({"name": "dedup", "stages": stages}, "curate dedup", "dedup")


def _print_summary(result, output: str) -> None:
    stats = result.stats
    totals = result.conservation.totals
    print(f"records by type: {json.dumps(stats['records'])}")
    for name, s in stats["stages"].items():
        reasons = ", ".join(f"{r}={n}" for r, n in list(s["reasons"].items())[:6])
        rate = f"{s['docs_per_s']:.0f}/s" if s.get("docs_per_s") else "-"
        print(f"  {name:<20} in={s['in']:<8} removed={s['removed']:<7} errors={s['errors']:<4} "
              f"{s['seconds']:.1f}s {rate:>8}  {reasons}")
    verdict = "OK" if result.conservation.ok else "FAILED"
    print(f"conservation {verdict}: documents read {totals.get('in', 0)} = kept {totals.get('kept', 0)} + "
          f"removed {totals.get('removed', 0)} + errors {totals.get('errors', 0)}")
    for line in result.conservation.failures():
        print(f"  conservation failed: {line}")
    for uri, step in sorted(result.conservation.unfinished.items()):
        print(f"  unfinished input (re-run to retry): {uri} (at {step})")
    for problem in result.problems:
        print(f"FAILED: {problem}")
    print(f"output: {output}")


def entry() -> None:
    """The console script: :func:`main`, then an exit that skips the interpreter's teardown.

    pyarrow 26 aborts the process (SIGABRT, "terminate called without an active exception", exit 134) in
    its C++ static destructors in a quarter to three quarters of the processes that read a Parquet file
    through a Python file object or an fsspec filesystem (apache/arrow#39862), which the runner and the
    audit commands do: a finished, correct run would exit 134. The ``atexit`` handlers (Ray's shutdown,
    logging's flush) still run; only the teardown after them, where nothing of curate's is left to do,
    is skipped.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()

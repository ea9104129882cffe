"""``curate shards build | inspect | decode | train-smoke``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from curate.config import ConfigError


def add_parser(sub: argparse._SubParsersAction, run_options) -> None:
    parser = sub.add_parser("shards", help="tokenized shards: build them from a corpus, inspect, decode, smoke-train")
    actions = parser.add_subparsers(dest="action", required=True)

    build = actions.add_parser("build", help="tokenize a kept/ folder or any Parquet/JSONL corpus into shards",
                               description="Runs parquet_read/jsonl_read and the tokenize stage: DIR/shards/ holds the "
                               "shards and manifest.json, with kept/, stats/ and the conservation check as in "
                               "`curate run`.")
    build.add_argument("inputs", nargs="+", help="Parquet or JSONL(.gz/.zst) files, globs, folders (a run's kept/)")
    build.add_argument("--output", "-o", required=True, help="output folder (local path or s3://...)")
    build.add_argument("--format", choices=["megatron", "npy"], default="megatron", help="shard format")
    build.add_argument("--tokenizer", default="cl100k_base", help="built-in name, tokenizer.json or a local HF folder")
    build.add_argument("--eos", default=None, help="end-of-document token (default: the tokenizer's)")
    build.add_argument("--seed", type=int, default=0, help="shuffle and mixing seed")
    build.add_argument("--shard-tokens", type=int, default=None, help="at most this many tokens per shard")
    build.add_argument("--split-documents", action="store_true", help="shards of exactly --shard-tokens tokens, "
                       "splitting the documents at the cuts (default: documents are never split)")
    build.add_argument("--mix", nargs="+", default=[], metavar="CONDITION=WEIGHT",
                       help="mixing weights, first match wins, e.g. 'quality_hq >= 0.8=2' \"language == de=0.5\"")
    build.add_argument("--max-host-share", type=float, default=None, help="cap any one host at this share")
    build.add_argument("--input-format", choices=["auto", "jsonl", "parquet"], default="auto")
    build.add_argument("--text-column", default="text", help="field holding the text")
    build.add_argument("--id-column", default="id", help="field holding a stable id")
    build.add_argument("--url-column", default="url", help="field holding the URL")
    build.add_argument("--columns", nargs="+", default=[], help="further fields to carry (e.g. quality_hq, for --mix); "
                       "language is always carried when present")
    run_options(build)

    inspect = actions.add_parser("inspect", help="print a shard folder's manifest and verify every file's sha256")
    inspect.add_argument("directory", help="the shards/ folder, or the run folder holding it")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.add_argument("--no-verify", action="store_true", help="skip the hashes")

    decode = actions.add_parser("decode", help="print one document of the shards back as text")
    decode.add_argument("directory", help="the shards/ folder, or the run folder holding it")
    which = decode.add_mutually_exclusive_group(required=True)
    which.add_argument("--doc", type=int, help="the document's position in the shards' order (0-based)")
    which.add_argument("--id", help="the document's id (its first copy)")
    decode.add_argument("--tokens", action="store_true", help="print the token ids too")

    smoke = actions.add_parser("train-smoke", help="train a tiny GPT on the shards: the loss curve and loss spikes")
    smoke.add_argument("directory", help="the shards/ folder, or the run folder holding it")
    smoke.add_argument("--steps", type=int, default=200)
    smoke.add_argument("--seq-len", type=int, default=64)
    smoke.add_argument("--batch-size", type=int, default=8)
    smoke.add_argument("--layers", type=int, default=2)
    smoke.add_argument("--d-model", type=int, default=128)
    smoke.add_argument("--lr", type=float, default=3e-3)
    smoke.add_argument("--seed", type=int, default=0)
    smoke.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")


def build_pipeline(args: argparse.Namespace):
    """The stand-alone shards pipeline: a corpus reader (carrying language and the mixing columns), tokenize."""
    from curate.config import pipeline_from_dict
    from curate.shards.mix import Condition

    mix = [_mix_rule(text) for text in args.mix]
    carried = list(dict.fromkeys(["language", *args.columns, *(Condition(r["where"]).column for r in mix)]))
    fmt = args.input_format
    if fmt == "auto":
        fmt = "parquet" if all(".parquet" in i or i.rstrip("/").endswith("kept") for i in args.inputs) else "jsonl"
    reader = {"text": args.text_column, "id": args.id_column, "url": args.url_column,
              "columns": [c for c in carried if c not in ("text", "id", "url")]}
    options: dict[str, Any] = {"tokenizer": args.tokenizer, "format": args.format, "seed": args.seed, "mix": mix,
                               "split_documents": args.split_documents}
    for name, value in (("eos", args.eos), ("shard_tokens", args.shard_tokens),
                        ("max_host_share", args.max_host_share)):
        if value is not None:
            options[name] = value
    return pipeline_from_dict({"name": "shards", "stages": [{f"{fmt}_read": reader}, {"tokenize": options}]},
                              "curate shards build", "shards")


def _mix_rule(text: str) -> dict[str, Any]:
    where, sep, weight = text.rpartition("=")
    try:
        if not sep or where.endswith(("=", "!", "<", ">")):
            raise ValueError
        return {"where": where.strip(), "weight": float(weight)}
    except ValueError:
        raise ConfigError(f"--mix {text!r}: expected CONDITION=WEIGHT, e.g. 'quality_hq >= 0.8=2'") from None


def run(args: argparse.Namespace) -> int:
    from curate.shards.formats import read_manifest

    try:
        manifest = read_manifest(args.directory)
    except (FileNotFoundError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    directory = manifest["_dir"]
    if args.action == "inspect":
        return _inspect(manifest, Path(directory), args)
    if args.action == "decode":
        return _decode(manifest, Path(directory), args)
    from curate.shards.smoke import train_smoke

    result = train_smoke(directory, steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size,
                         layers=args.layers, d_model=args.d_model, lr=args.lr, seed=args.seed, device=args.device)
    print(result.report())
    return 0


def _inspect(manifest: dict, directory: Path, args: argparse.Namespace) -> int:
    shown = {k: v for k, v in manifest.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps(shown, indent=1))
    else:
        t, tok = manifest["totals"], manifest["tokenizer"]
        print(f"{directory}: {len(manifest['shards'])} shards, {manifest['format']} {manifest['dtype']}, "
              f"{t['documents']} documents ({t['documents_in']} in), {t['tokens']} tokens")
        print(f"tokenizer {tok['name']} sha256 {tok['sha256'][:16]}… vocab {tok['vocab_size']} eos {tok['eos_id']}")
        for name, what in (("language", "by_language"), ("bucket", "by_bucket")):
            print(f"by {name}: " + ", ".join(f"{k or '?'}={v['tokens']}" for k, v in list(t[what].items())[:12]))
        print(f"sources: {t['sources']}, largest: " +
              ", ".join(f"{k or '?'}={v['tokens']}" for k, v in list(t["by_source"].items())[:8]))
        for r in manifest["mix"]["realised"]:
            print(f"mix {r['bucket']}: weight {r['weight']:g} -> realised {r['realised_weight']:.3f} "
                  f"({r['documents']} of {r['documents_in']} documents, {r['token_share']:.1%} of tokens)")
        for shard in manifest["shards"]:
            print(f"  {shard['name']}: {shard['documents']} documents, {shard['tokens']} tokens")
    if args.no_verify:
        return 0
    listed = {path for shard in manifest["shards"] for path in shard["sha256"]}
    bad = []
    for shard in manifest["shards"]:
        for path, digest in shard["sha256"].items():
            file = directory / path
            if not file.exists():
                bad.append(f"{path}: missing")
            elif _sha256(file) != digest:
                bad.append(f"{path}: sha256 differs from the manifest")
    extra = sorted(p.name for p in directory.glob("shard-*") if p.name not in listed)
    for name in extra:
        print(f"note: {name} is not in the manifest (left by an interrupted attempt?)")
    for line in bad:
        print(f"FAILED: {line}")
    print(f"verified {len(listed) - len(bad)} of {len(listed)} files" + ("" if not bad else " — hashes FAILED"))
    return 1 if bad else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode(manifest: dict, directory: Path, args: argparse.Namespace) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.shards.formats import open_shard
    from curate.tokenizer import load_tokenizer

    position = 0
    for shard in manifest["shards"]:
        docs = pq.read_table(directory / f"{shard['name']}.docs.parquet")
        if args.id is not None:
            hits = pc.indices_nonzero(pc.equal(docs["id"], args.id)).to_pylist()
            index = hits[0] if hits else None
        else:
            index = args.doc - position if position <= args.doc < position + docs.num_rows else None
        if index is not None:
            reader = open_shard(str(directory / shard["name"]), manifest["format"], manifest["dtype"])
            tokens = reader.document(index)
            row = docs.slice(index, 1).to_pylist()[0]
            print(f"# {shard['name']} document {index} (position {position + index}): id={row['id']} "
                  f"url={row['url']} source={row['source']} language={row['language']} tokens={len(tokens)}")
            tokenizer = _tokenizer(manifest, load_tokenizer)
            eos = manifest["tokenizer"]["eos_id"]
            body = tokens[:-1] if len(tokens) and tokens[-1] == eos else tokens
            if args.tokens:
                print(" ".join(map(str, tokens.tolist())))
            print(tokenizer.decode(body.tolist()))
            return 0
        position += docs.num_rows
    print(f"curate: error: no document {args.id or args.doc} in {directory}", file=sys.stderr)
    return 2


def _tokenizer(manifest: dict, load):
    """The manifest's tokenizer, refusing one whose file differs from the one the shards were made with."""
    spec = manifest["tokenizer"]
    tokenizer = load(spec.get("spec", spec["name"]), eos=spec.get("eos_token"))
    if tokenizer.sha256 != spec["sha256"]:
        raise ConfigError(f"tokenizer {spec['name']!r} here has sha256 {tokenizer.sha256[:16]}…, the shards were "
                          f"made with {spec['sha256'][:16]}…")
    return tokenizer

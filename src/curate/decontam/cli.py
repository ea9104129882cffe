"""``curate decontam build EVAL... -o INDEX`` and ``curate decontam inspect INDEX``."""

from __future__ import annotations

import argparse
import json
import sys

from curate.decontam.index import NgramIndex, Normalisation, build_index, read_eval_items


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("decontam", help="benchmark decontamination: build or inspect an n-gram index")
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="index the n-grams of evaluation sets for the decontaminate stage",
                               description="Reads JSONL(.gz/.zst), JSON lists, Parquet and plain-text files (a line "
                               "is an item) or folders of them; the benchmark is the file's name (or --name).")
    build.add_argument("inputs", nargs="+", help="evaluation files or folders")
    build.add_argument("--output", "-o", required=True, help="the index file to write")
    build.add_argument("--text-field", action="append", default=None,
                       help="field(s) whose text is indexed, joined (repeatable; dotted for nested; default text)")
    build.add_argument("--id-field", default="id", help="field holding the item id (missing: the row number)")
    build.add_argument("--name", default=None, help="benchmark name for all inputs (default: each file's name)")
    build.add_argument("--ngram", type=int, default=13, help="words per n-gram (default 13, as GPT-3 and OLMo)")
    build.add_argument("--min-item-words", type=int, default=8,
                       help="a shorter item is skipped; one of fewer than --ngram words is one n-gram of all of them")
    build.add_argument("--keep-case", action="store_true", help="do not lowercase")
    build.add_argument("--keep-punctuation", action="store_true", help="punctuation is part of words")
    build.add_argument("--fold-digits", action="store_true", help="map every digit to 0")
    inspect = actions.add_parser("inspect", help="print an index's parameters, benchmarks and false-positive rate")
    inspect.add_argument("index")
    inspect.add_argument("--json", action="store_true", help="print the header as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            normalisation = Normalisation(lowercase=not args.keep_case, punctuation=not args.keep_punctuation,
                                          digits=args.fold_digits)
            items = read_eval_items(args.inputs, args.text_field or ["text"], args.id_field, args.name)
            report = build_index(items, args.output, args.ngram, args.min_item_words, normalisation,
                                 sources=list(args.inputs))
            print(f"index {report.path}: {report.items} items ({report.skipped_short} under {args.min_item_words} "
                  f"words skipped), {report.distinct} distinct {args.ngram}-grams, {report.bytes / 1e6:.1f} MB, "
                  f"{report.seconds:.1f}s")
            for name, count in sorted(report.per_benchmark.items()):
                print(f"  {name}: {count} items")
            print(f"  false positive per looked-up n-gram: {report.false_positive_per_lookup:.2e}")
            return 0
        index = NgramIndex(args.index)
        header = {k: v for k, v in index.header.items() if k != "sections"}
        if args.json:
            print(json.dumps(header, indent=1))
            return 0
        print(f"{args.index}: {header['items']} items, {header['distinct']} distinct {header['ngram']}-grams "
              f"(word lengths looked up: {header['lengths']}), built {header['built']}")
        print(f"  normalisation: {header['normalisation']}; {header['skipped_short_items']} items under "
              f"{header['min_item_words']} words skipped")
        for name, count in sorted(header["benchmarks"].items()):
            print(f"  {name}: {count} items")
        print(f"  false positive per looked-up n-gram: {header['false_positive_per_lookup']:.2e}")
        return 0
    except (OSError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2

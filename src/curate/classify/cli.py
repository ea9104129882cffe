"""``curate classifiers list | train | eval | predict``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.classify.base import Classifier, list_classifiers
from curate.classify.data import read_labelled, read_texts
from curate.classify.metrics import binary_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("classifiers", help="list, train, evaluate and apply document classifiers")
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("list", help="installed classifiers and where they come from")

    train = commands.add_parser("train", help="train a classifier")
    kinds = train.add_subparsers(dest="kind", required=True)
    ft = kinds.add_parser("fasttext", help="fastText (DCLM-style quality, or topics from a label field)")
    _training_inputs(ft, "model file to write (.bin)")
    for name, default, kind in (("epoch", 5, int), ("lr", 0.1, float), ("dim", 100, int), ("word-ngrams", 2, int),
                                ("min-count", 1, int), ("bucket", 200_000, int), ("seed", 0, int),
                                ("max-chars", None, int)):
        ft.add_argument(f"--{name}", type=kind, default=default, help=f"fastText option (default {default})")

    tr = kinds.add_parser("transformer", help="a softmax head on MiniLM sentence embeddings (GPU if present)")
    _training_inputs(tr, "model folder to write (head.safetensors + config.json)")
    tr.add_argument("--l2", type=float, default=1e-3, help="weight decay of the head")
    tr.add_argument("--max-length", type=int, default=256, help="tokens per document")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    tr.add_argument("--fine-tune-epochs", type=int, default=0, help="also fine-tune the encoder for this many "
                    "epochs (default 0: the head alone, on frozen embeddings)")
    tr.add_argument("--fine-tune-lr", type=float, default=2e-5, help="the encoder's learning rate when fine-tuning")
    tr.add_argument("--seed", type=int, default=0)

    ev = commands.add_parser("eval", help="precision/recall/F1/ROC-AUC on labelled texts")
    ev.add_argument("model", help="a model: fastText .bin/.ftz file, or a transformer model folder")
    ev.add_argument("--labelled", nargs="+", required=True, help="JSONL/Parquet with text and label fields")
    ev.add_argument("--positive-label", default=None, help="binary: the model label that means positive "
                    "(default: the model's first label)")
    ev.add_argument("--positive-value", default=None, help="binary: the value of the label field that is "
                    "positive (default: --positive-label), e.g. 1")
    ev.add_argument("--threshold", type=float, default=0.5, help="score at or above which a text is positive")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    _data_options(ev)

    pr = commands.add_parser("predict", help="score texts into a Parquet file: id, text, one column per label")
    pr.add_argument("model", help="a model: fastText .bin/.ftz file, or a transformer model folder")
    pr.add_argument("inputs", nargs="+", help="JSONL/Parquet/plain text, globs, folders")
    pr.add_argument("--output", "-o", required=True, help="Parquet file to write")
    pr.add_argument("--id-field", default="id", help="field holding the id (missing: <file>@<n>)")
    _data_options(pr, labels=False)


def _training_inputs(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--positive", nargs="+", default=[], help="positive texts: JSONL/Parquet/plain text (a "
                        "line each), globs, folders such as a run's kept/")
    parser.add_argument("--negative", nargs="+", default=[], help="negative texts (e.g. a crawl's kept/ folder)")
    parser.add_argument("--labelled", nargs="+", default=[], help="texts with a label field (any number of labels)")
    parser.add_argument("--positive-label", default="hq", help="label given to --positive texts")
    parser.add_argument("--negative-label", default="lq", help="label given to --negative texts")
    parser.add_argument("--out", required=True, help=out)
    _data_options(parser)


def _data_options(parser: argparse.ArgumentParser, labels: bool = True) -> None:
    parser.add_argument("--text-field", default="text", help="field holding the text (dotted path for nested)")
    if labels:
        parser.add_argument("--label-field", default="label", help="field holding the label")


def load_model(path: str) -> Classifier:
    """A trained model as a loaded classifier: a transformer model folder, or a fastText file."""
    from curate.classify.fasttext import FastTextClassifier, FastTextParams
    from curate.classify.transformer import TransformerClassifier, TransformerParams

    if Path(path).is_dir():
        classifier: Classifier = TransformerClassifier(TransformerParams(model=path))
    elif Path(path).is_file():
        classifier = FastTextClassifier(FastTextParams(model=path))
    else:
        raise FileNotFoundError(f"no model at {path}")
    classifier.load()
    return classifier


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            for c in list_classifiers():
                print(f"{c.name:<20} {c.origin:<40} {c.target}")
            return 0
        if args.action == "train":
            return _train(args)
        if args.action == "eval":
            return _eval(args)
        return _predict(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2


def _examples(args: argparse.Namespace) -> list[tuple[str, str]]:
    if not (args.labelled or (args.positive and args.negative)):
        raise ValueError(f"train {args.kind}: give --positive and --negative, or --labelled")
    examples: list[tuple[str, str]] = []
    examples += [(args.positive_label, t) for t in read_texts(args.positive, args.text_field)]
    examples += [(args.negative_label, t) for t in read_texts(args.negative, args.text_field)]
    examples += list(read_labelled(args.labelled, args.text_field, args.label_field))
    return examples


def _train(args: argparse.Namespace) -> int:
    examples = _examples(args)
    if args.kind == "transformer":
        from curate.classify.transformer import Encoder, EncoderParams, FineTuning, fine_tune, fit_head, save_head

        encoder = Encoder(EncoderParams(device=args.device, max_length=args.max_length))
        texts, labels = [t for _, t in examples], [label for label, _ in examples]
        if args.fine_tune_epochs:
            tuning = FineTuning(epochs=args.fine_tune_epochs, lr=args.fine_tune_lr, seed=args.seed)
            head = fine_tune(encoder, texts, labels, tuning, l2=args.l2)
            save_head(head, args.out, args.max_length, encoder)
        else:
            head = fit_head(encoder.encode(texts), labels, l2=args.l2, seed=args.seed)
            save_head(head, args.out, args.max_length)
        what = "fine-tuned MiniLM" if args.fine_tune_epochs else "MiniLM"
        print(f"trained {args.out}: {len(examples)} texts, labels {head.labels} ({what} on {encoder.device})")
        return 0
    from curate.classify.fasttext import FastTextTraining, train_fasttext

    training = FastTextTraining(epoch=args.epoch, lr=args.lr, dim=args.dim, wordNgrams=args.word_ngrams,
                                minCount=args.min_count, bucket=args.bucket, seed=args.seed,
                                max_chars=args.max_chars)
    model = train_fasttext(examples, args.out, training)
    counts: dict[str, int] = {}
    for label, _ in examples:
        counts[label] = counts.get(label, 0) + 1
    labels = [label.removeprefix("__label__") for label in model.labels]
    print(f"trained {args.out}: {len(examples)} texts {counts}, labels {labels}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    classifier = load_model(args.model)
    pairs = list(read_labelled(args.labelled, args.text_field, args.label_field))
    labels = classifier.labels()
    scores = _score_all(classifier, [t for _, t in pairs])
    truth = [label for label, _ in pairs]
    if len(labels) == 2 or args.positive_label:
        positive = args.positive_label or labels[0]
        if positive not in labels:
            raise ValueError(f"--positive-label {positive!r} is not a label of the model ({', '.join(labels)})")
        value = args.positive_value if args.positive_value is not None else positive
        report = {"positive_label": positive, **binary_report(np.array([t == value for t in truth]),
                                                             scores[positive], args.threshold)}
    else:
        report = _multiclass(truth, labels, scores)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()
                        if not isinstance(v, dict)))
        for label, row in report.get("per_label", {}).items():
            print(f"  {label:<20} " + "  ".join(f"{k}={v:.4f}" for k, v in row.items()))
    return 0


def _multiclass(truth: list[str], labels: list[str], scores: dict[str, np.ndarray]) -> dict:
    matrix = np.stack([scores[label] for label in labels], axis=1)
    predicted = [labels[i] for i in matrix.argmax(axis=1)]
    per_label = {}
    for label in labels:
        tp = sum(p == label and t == label for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == label and t != label for p, t in zip(predicted, truth, strict=True))
        fn = sum(p != label and t == label for p, t in zip(predicted, truth, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        per_label[label] = {"precision": precision, "recall": recall,
                            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    return {"n": len(truth), "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])),
            "macro_f1": float(np.mean([r["f1"] for r in per_label.values()])), "per_label": per_label}


def _score_all(classifier: Classifier, texts: list[str]) -> dict[str, np.ndarray]:
    size = classifier.batch_size
    parts = [classifier.score(texts[i:i + size]) for i in range(0, len(texts), size)]
    return {label: np.concatenate([p[label] for p in parts]) if parts else np.zeros(0)
            for label in classifier.labels()}


def _predict(args: argparse.Namespace) -> int:
    from curate.classify.data import _records
    from curate.io.fs import expand_inputs

    classifier = load_model(args.model)
    ids: list[str] = []
    texts: list[str] = []
    for uri in expand_inputs(args.inputs):
        for n, record in enumerate(_records(uri, [args.text_field, args.id_field], {}), start=1):
            text = record[args.text_field]
            if not isinstance(text, str):
                raise ValueError(f"{uri}: record {n} has no {args.text_field!r} text")
            ids.append(str(record[args.id_field]) if record[args.id_field] is not None else f"{uri}@{n}")
            texts.append(text)
    scores = _score_all(classifier, texts)
    table = pa.table({"id": ids, "text": texts, **{label: pa.array(v, pa.float64()) for label, v in scores.items()}})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, args.output)
    print(f"scored {len(texts)} texts -> {args.output} ({', '.join(classifier.labels())})")
    return 0

"""Recipe: a fastText "close to Wikipedia" quality model (``hq`` / ``lq``), built from text, never downloaded.

What it is for: a quality score for a crawl when there are no human labels for it. The model learns what
separates edited reference prose (Wikipedia, news, optionally State of the Union addresses) from the crawl
being processed, the approach of GPT-3's and LLaMA's "looks like a reference page" classifiers (Brown et al.
2020, arXiv:2005.14165 appendix A; Touvron et al. 2023, arXiv:2302.13971 section 2). Negatives should be
documents of *that* crawl (``--negatives runs/x/kept/``); without them the recipe falls back to the
informal web text in the shared data (nltk's webtext: Firefox bug-tracker titles, Overheard in New York,
singles ads; and reddit comments from 2015).

Measured (tests/classify/test_quality_eval.py, default data, seed 0): ROC-AUC 0.62 on the 387
human-labelled Common Crawl documents of the DCLM annotation study, none of which is in its training data
(0.62 with ``--state-of-the-union`` too; 0.617-0.622 over seeds 1-4). That is below the best single
heuristic signal (document length or a proxy of it: 0.73, signal and direction chosen on training folds)
and far below a fastText model trained on those labels (5-fold CV 0.835): closeness to Wikipedia is a weak
proxy for what these annotators call quality. Its worst misses: the annotators rate personal blog posts
and helpful forum threads (quilting, home-brewing, a service-dog forum) as good, and the model gives them
under 0.03; they rate course catalogues, dictionary entries and navigation lists as poor, and the model,
seeing encyclopedic vocabulary, gives them over 0.95. Use it to rank a crawl that has no labels, against
that crawl's own documents and with a loose threshold; where there are labels of the crawl, train on them
instead (classifiers/README.md).

Positives are cut into paragraph-bounded chunks whose sizes are drawn around Common Crawl's document sizes
(median about 1,500 characters), so the model cannot learn "long = good" from whole 100 kB articles against
one-line posts; negatives from line-oriented sources are cut into chunks of the same sizes. The chunk sizes
are seeded from ``--seed`` and the source's name, and training uses one thread, so the same data and seed
give the same model, byte for byte.

    python classifiers/recipes/wikipedia_quality.py --out models/wiki_quality.bin
    python classifiers/recipes/wikipedia_quality.py --out models/wiki_quality.bin --negatives runs/cc/kept/
    python classifiers/recipes/wikipedia_quality.py --out models/wiki_quality.bin \\
        --evaluate ../shared/data/text/dclm-human-quality-labels.shared.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from curate.classify.data import read_labelled, read_texts
from curate.classify.fasttext import FastTextClassifier, FastTextParams, FastTextTraining, train_fasttext
from curate.classify.metrics import binary_report

POSITIVE, NEGATIVE = "hq", "lq"

#: The shared data folder (../shared/data from the repository root, as the tests find it).
DEFAULT_DATA = Path(os.environ.get("CURATE_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))

#: Chunk sizes, in characters: log-normal around Common Crawl's median document (the DCLM-labelled sample's
#: median is 1,443 characters, its quartiles 696 and 2,802), clipped to [MIN_CHUNK, MAX_CHUNK].
CHUNK_MEDIAN, CHUNK_SIGMA, MIN_CHUNK, MAX_CHUNK = 1500.0, 0.8, 300, 8000

#: fastText settings: DCLM's wordNgrams 2 (unigrams alone hit fastText's NaN failure on small data,
#: ../shared/notes/dependencies.md), more epochs than DCLM's 3 because this corpus is a few thousand
#: chunks, not millions of documents.
TRAINING = FastTextTraining(epoch=10, lr=0.1, dim=100, wordNgrams=2, minCount=2, thread=1, seed=0, bucket=200_000)


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded from the recipe's seed and a source's name (no global state, order-independent)."""
    digest = hashlib.sha1(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _targets(rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield int(np.clip(rng.lognormal(np.log(CHUNK_MEDIAN), CHUNK_SIGMA), MIN_CHUNK, MAX_CHUNK))


def chunks(units: Sequence[str], rng: np.random.Generator, joiner: str = "\n\n") -> list[str]:
    """Consecutive ``units`` (paragraphs, lines, comments) joined into chunks of drawn sizes.

    A chunk ends at the first unit boundary at or past its drawn size; a unit longer than MAX_CHUNK is a
    chunk of its own (never cut mid-unit); a trailing remainder under MIN_CHUNK is dropped.
    """
    out: list[str] = []
    targets = _targets(rng)
    target, current, size = next(targets), [], 0
    for unit in units:
        unit = unit.strip()
        if not unit:
            continue
        current.append(unit)
        size += len(unit) + len(joiner)
        if size >= target:
            out.append(joiner.join(current))
            target, current, size = next(targets), [], 0
    if current and size >= MIN_CHUNK:
        out.append(joiner.join(current))
    return out


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


# --- sources -------------------------------------------------------------------------------------------------


def wikipedia(data: Path, seed: int) -> list[str]:
    """The shared English Wikipedia articles (plain text), each cut at paragraph boundaries."""
    out = []
    with gzip.open(data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        for row in map(json.loads, f):
            out += chunks(_paragraphs(row["text"]), _rng(seed, f"wiki/{row['title']}"))
    return out


def news(data: Path) -> list[str]:
    """The 300 ABC news articles of the Lee corpus (one per line, median 991 characters: already doc-sized)."""
    lines = (data / "text" / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.strip()) >= MIN_CHUNK]


def state_union(data: Path, seed: int) -> list[str]:
    """The State of the Union addresses 1945–2006 (some files are ISO-8859-1), cut at paragraph (line) ends."""
    out = []
    for path in sorted((data / "text" / "nltk-state_union").glob("*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        out += chunks(text.splitlines(), _rng(seed, f"sotu/{path.name}"), joiner="\n")
    return out


def webtext(data: Path, seed: int) -> list[str]:
    """nltk's webtext: Firefox bug titles and singles ads by line, Overheard in New York by dialogue."""
    folder = data / "text" / "nltk-webtext"
    firefox = (folder / "firefox.txt").read_bytes().decode("latin-1").splitlines()  # ISO-8859-1 (SOURCES.md)
    singles = (folder / "singles.txt").read_text(encoding="ascii", errors="replace").splitlines()
    overheard = _paragraphs((folder / "overheard.txt").read_text(encoding="ascii", errors="replace"))
    return (chunks(firefox, _rng(seed, "webtext/firefox"), joiner="\n")
            + chunks(singles, _rng(seed, "webtext/singles"), joiner="\n")
            + chunks(overheard, _rng(seed, "webtext/overheard")))


def reddit(data: Path, seed: int) -> list[str]:
    """The reddit-2015 comments, each unique comment once, in thread order, chunked like documents."""
    out = []
    for path in sorted((data / "text" / "reddit-2015").glob("*.json.gz")):
        raw = gzip.decompress(path.read_bytes()).decode("utf-8")
        pairs = json.loads("[" + raw[2:] if raw.startswith("[,") else raw)  # upstream bug, see SOURCES.md
        comments = list(dict.fromkeys(text for pair in pairs for text in (pair["question"], pair["answer"])))
        out += chunks(comments, _rng(seed, f"reddit/{path.name}"))
    return out


def examples(data: Path = DEFAULT_DATA, negatives: Sequence[str] = (), state_of_the_union: bool = False,
             seed: int = 0, balance: bool = True) -> list[tuple[str, str]]:
    """(label, text) training pairs: positives from the reference sources, negatives from ``negatives``
    (files/folders/globs that :func:`curate.classify.data.read_texts` reads, e.g. a run's ``kept/``) or, when
    none are given, from the shared informal web text.

    With ``balance`` the larger class is subsampled (seeded) to the size of the smaller one, so neither
    label's prior dominates fastText's softmax.
    """
    positive = wikipedia(data, seed) + news(data)
    if state_of_the_union:
        positive += state_union(data, seed)
    negative = list(read_texts(list(negatives))) if negatives else webtext(data, seed) + reddit(data, seed)
    if balance:
        n = min(len(positive), len(negative))
        positive = _sample(positive, n, _rng(seed, "balance/hq"))
        negative = _sample(negative, n, _rng(seed, "balance/lq"))
    pairs = [(POSITIVE, t) for t in positive] + [(NEGATIVE, t) for t in negative]
    order = _rng(seed, "shuffle").permutation(len(pairs))  # fastText's SGD sees the labels interleaved
    return [pairs[i] for i in order]


def _sample(items: list[str], n: int, rng: np.random.Generator) -> list[str]:
    if len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def train(out: str | Path, pairs: Iterable[tuple[str, str]], seed: int = 0, epoch: int | None = None,
          lr: float | None = None):
    """Train and save the model at ``out`` (returns the fastText model)."""
    update = {"seed": seed} | ({"epoch": epoch} if epoch else {}) | ({"lr": lr} if lr else {})
    return train_fasttext(pairs, out, TRAINING.model_copy(update=update))


def evaluate(model: str | Path, labelled: Sequence[str], positive: str = "1") -> dict[str, float]:
    """ROC-AUC (and precision/recall at 0.5) of the ``hq`` probability against a labelled JSONL file."""
    pairs = list(read_labelled(list(labelled)))
    classifier = FastTextClassifier(FastTextParams(model=str(model)))
    classifier.load()
    scores = classifier.score([text for _, text in pairs])[POSITIVE]
    return binary_report(np.array([label == positive for label, _ in pairs]), scores)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the fastText model (.bin)")
    parser.add_argument("--negatives", nargs="+", default=[], metavar="PATH",
                        help="the crawl's own documents (JSONL/Parquet/text files, folders such as a run's kept/, "
                        "globs); default: the shared nltk webtext + reddit-2015 text")
    parser.add_argument("--state-of-the-union", action="store_true", help="add the State of the Union addresses "
                        "(1945-2006) to the positives")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=None, help=f"default {TRAINING.epoch}")
    parser.add_argument("--lr", type=float, default=None, help=f"default {TRAINING.lr}")
    parser.add_argument("--no-balance", action="store_true", help="keep every example of the larger class")
    parser.add_argument("--evaluate", nargs="+", default=[], metavar="JSONL",
                        help="labelled files ({text, label}) to report ROC-AUC on after training")
    parser.add_argument("--positive-label", default="1", help="the --evaluate label of high quality (default 1)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    pairs = examples(args.data, args.negatives, args.state_of_the_union, args.seed, balance=not args.no_balance)
    counts = {label: sum(1 for lab, _ in pairs if lab == label) for label in (POSITIVE, NEGATIVE)}
    if min(counts.values()) < 200:
        print(f"warning: only {counts} examples (balanced to the smaller class); a few hundred documents of "
              "each are the least for a useful model", file=sys.stderr)
    train(args.out, pairs, args.seed, args.epoch, args.lr)
    print(f"trained {args.out} on {counts} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.evaluate:
        report = evaluate(args.out, args.evaluate, args.positive_label)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

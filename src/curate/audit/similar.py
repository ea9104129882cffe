"""``curate audit similar OUT "text" [-k 10] [--in kept|removed|all]``: the documents nearest a text, and
where each one ended up (kept, or removed by which stage and rule).

Three ways, the first the run allows (or the one ``--method`` names):

* ``embedding``: the run kept embeddings (a ``classify`` stage with ``embeddings: true`` writes
  ``<name>_embedding``): the query is embedded by that stage's classifier (the same MiniLM, and the same
  fine-tuned weights and ``max_length`` for a trained head), on the CPU, and documents are ranked by cosine.
* ``minhash``: the run's ``minhash_dedup`` kept its signatures (``work/steps/<k>/rounds/*-minhash_signatures``,
  the files its round marker names, with the hash family in their metadata). The query is signed with
  that family and compared with every stored signature, a batch at a time in numpy (the estimated Jaccard:
  the share of equal values); the best few are then re-ranked by the exact Jaccard of the shingle sets when
  the run stored them (``verify: true``). Nothing of the corpus is re-hashed. Only documents that reached
  the dedup were signed: those removed before it are not searched (``--method scan`` reads them).
* ``scan``: no embeddings and no signatures: every document's text is read and shingled (the run's
  ``minhash_dedup`` parameters when it has one, else their defaults), and ranked by exact Jaccard. It
  reads the whole corpus: slow on a crawl, and it says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curate.audit.run import RunOutput

HELP = ("the documents nearest a text (by the run's embeddings, else its MinHash signatures, else a scan of the "
        "texts) and where each ended up")
METHODS = ("auto", "embedding", "minhash", "scan")
SCOPES = ("kept", "removed", "all")
SNIPPET = 160
SCHEME = "curate-words-v1/datasketch-affine32"
#: Rows compared at a time in the embedding and scan paths.
BATCH_ROWS = 8192
#: Signatures compared at a time (65536 x 120 permutations: a 31 MB matrix and an 8 MB comparison).
SIGNATURE_ROWS = 1 << 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help='the query text ("-": read it from standard input)')
    parser.add_argument("-k", type=int, default=10, help="documents to show (default 10)")
    parser.add_argument("--in", dest="scope", choices=SCOPES, default="all",
                        help="search the kept documents, the removed ones, or all (default)")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="auto (default): embeddings if the run kept them, else MinHash signatures, else a scan")
    parser.add_argument("--json", action="store_true", help="print the neighbours as JSON")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    found = similar(output, text, k=args.k, scope=args.scope, method=args.method)
    print(json.dumps(found, indent=1, default=str) if args.json else format_similar(found))
    return 0 if found["results"] else 1


def similar(output: RunOutput, text: str, k: int = 10, scope: str = "all", method: str = "auto") -> dict[str, Any]:
    """The ``k`` documents nearest ``text`` in ``scope``, best first, as plain data."""
    if scope not in SCOPES:
        raise ValueError(f"--in {scope!r}: one of {', '.join(SCOPES)}")
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: one of {', '.join(METHODS)}")
    if not text.strip():
        raise ValueError("the query text is empty")
    if k < 1:
        raise ValueError("-k must be at least 1")
    embedding = embedding_source(output) if method in ("auto", "embedding") else None
    signed = signature_source(output) if method == "minhash" or (method == "auto" and embedding is None) else None
    if method == "embedding" and embedding is None:
        raise ValueError(f"{output.out.url}: the run kept no embeddings (a classify stage with embeddings: true)")
    if method == "minhash" and signed is None:
        raise ValueError(f"{output.out.url}: the run has no current minhash_dedup signatures")
    if embedding is not None:
        found = _by_embedding(output, text, k, scope, embedding)
    elif signed is not None:
        found = _by_signature(output, text, k, scope, signed)
    else:
        found = _by_scan(output, text, k, scope, asked=method == "scan")
    where = _locate(output, [r["id"] for r in found["results"]])
    for rank, row in enumerate(found["results"], start=1):
        row.update({"rank": rank, **where.get(row["id"], {"where": "not in kept or removed", "url": None,
                                                           "snippet": ""})})
    return {"query": _snippet(text), "scope": scope, **found}


# ---- embeddings -----------------------------------------------------------------------------------------

@dataclass
class EmbeddingSource:
    stage: str  # the classify stage's name
    column: str
    params: dict[str, Any]  # its configuration, as run.json recorded it


def embedding_source(output: RunOutput) -> EmbeddingSource | None:
    """The first classify stage of the run that kept embeddings and whose column the parts hold (run.json
    records each stage's configuration under the stage's name, a classify stage's being its ``name``)."""
    names = set()
    for kind in ("kept", "removed"):
        dataset = output.dataset(kind)
        if dataset is not None:
            names |= set(dataset.schema.names)
    for entry in output.run.get("pipeline", {}).get("stages", []):
        for params in entry.values():  # run.json keys a classify stage by its own name
            if isinstance(params, dict) and params.get("embeddings") and "classifier" in params \
                    and f"{params['name']}_embedding" in names:
                return EmbeddingSource(params["name"], f"{params['name']}_embedding", params)
    return None


def encode_query(source: EmbeddingSource, text: str) -> np.ndarray:
    """The query's embedding by the stage's own classifier (its encoder weights and max_length), on the CPU."""
    from curate.classify.base import get_classifier

    cls = get_classifier(source.params["classifier"])
    classifier = cls(cls.Params(**{**source.params.get("options", {}), "device": "cpu"}))
    classifier.load()
    try:
        vector = classifier.encode([text])[0].astype(np.float64)
    finally:
        classifier.close()
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _by_embedding(output: RunOutput, text: str, k: int, scope: str, source: EmbeddingSource) -> dict[str, Any]:
    query = encode_query(source, text)
    best = _Best(k)
    searched = unsearched = 0
    for kind in _kinds(scope):
        dataset = output.dataset(kind)
        if dataset is None:
            continue
        if source.column not in dataset.schema.names:
            unsearched += dataset.count_rows()
            continue
        for batch in dataset.to_batches(columns=["id", source.column], batch_size=BATCH_ROWS):
            vectors = batch.column(source.column)
            valid = pc.is_valid(vectors)
            rows = batch.filter(valid)
            unsearched += batch.num_rows - rows.num_rows
            if not rows.num_rows:
                continue
            matrix = _matrix(rows.column(source.column), len(query)).astype(np.float64)
            norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
            best.add(matrix @ query / norms, rows.column("id"))
            searched += rows.num_rows
    results = [{"id": id_, "similarity": round(score, 6)} for score, id_ in best.items()]
    return {"method": "embedding", "detail": f"cosine of {source.column} (the {source.stage} stage's "
            f"{source.params['classifier']} encoder, the query embedded on the CPU)",
            "searched": searched, "not_searched": unsearched,
            **({"not_searched_why": f"no {source.column}: removed before {source.stage}"} if unsearched else {}),
            "results": results}


# ---- MinHash signatures ---------------------------------------------------------------------------------

@dataclass
class SignatureSource:
    stage: str
    step: int
    paths: list[str]  # the signature files the round's marker names
    family: dict[str, Any]
    later_stages: list[str]  # stages from the dedup on: what removed a signed document (or kept it)

    @property
    def params(self):
        from curate.dedup.minhash import MinHashParams

        f = self.family
        # only num_perm and seed shape the permutations; bands x rows matter to LSH, not to a query
        return MinHashParams(ngram=f["ngram"], seed=f["seed"], bands=f["num_perm"], rows=1, lowercase=f["lowercase"],
                             punctuation=f["punctuation"], digits=f["digits"])


def signature_source(output: RunOutput) -> SignatureSource | None:
    """The signatures of the run's (last) ``minhash_dedup`` step, when its round finished over the step's
    current input (a marker of an older input snapshot does not describe this corpus)."""
    from curate.commit import step_digest
    from curate.dedup.minhash import METADATA_KEY, SIGNATURE_ROUND

    steps = output.run.get("steps", [])
    for step in reversed(steps):
        if step.get("kind") != "global" or "minhash_dedup" not in step.get("stages", []):
            continue
        k = step["index"]
        markers = sorted(output.fs.glob(f"{output.root}/work/steps/{k:02d}/rounds/*-{SIGNATURE_ROUND}.json"))
        if not markers or k < 1 or k - 1 >= len(output.chain):
            continue
        with output.fs.open(markers[-1], "r") as f:
            marker = json.load(f)
        if marker.get("digest") != step_digest(output.chain[k - 1]):
            continue
        paths = [f"{output.root}/{p}" for p in marker.get("files", {}).get("signatures", [])]
        family: dict[str, Any] = {}
        for path in paths:
            meta = pq.read_schema(path, filesystem=output.filesystem).metadata or {}
            family = json.loads(meta.get(METADATA_KEY, b"{}")).get("family", {})
            if family:
                break
        if not paths:
            return None  # the dedup signed nothing (no document had a word)
        if family.get("scheme") != SCHEME:
            raise ValueError(f"{paths[0]}: signatures of an unknown hash family {family.get('scheme')!r}")
        later = [name for s in steps if s["index"] >= k for name in s.get("stages", [])]
        return SignatureSource("minhash_dedup", k, paths, family, later)
    return None


def query_shingles(text: str, params) -> tuple[np.ndarray, np.ndarray]:
    """The query's distinct shingle values and its signature (the dedup kernel, on one document)."""
    from curate.dedup.minhash import shingle_hashes, signatures

    values, offsets = shingle_hashes(pa.array([text], pa.string()), params)
    if not len(values):
        raise ValueError("the query text has no words to shingle")
    return np.unique(values), signatures(values, offsets, params)[0]


def _by_signature(output: RunOutput, text: str, k: int, scope: str, source: SignatureSource) -> dict[str, Any]:
    from curate.dedup.minhash import estimate

    params = source.params
    shingles, signature = query_shingles(text, params)
    # a signed document was kept unless a stage from the dedup on removed it: those few ids decide the scope
    later = _removed_ids(output, source.later_stages) if scope != "all" else None
    pool = max(4 * k, k + 16)  # re-ranked by exact Jaccard: an estimate is off by ~0.04 at 120 permutations
    best = _Best(pool, minimum=0.0)  # a document sharing no hash value is not a neighbour
    searched = 0
    verify = True
    for i, path in enumerate(source.paths):
        file = pq.ParquetFile(path, filesystem=output.filesystem)
        verify = verify and "shingles" in file.schema_arrow.names
        for group in range(file.num_row_groups):
            rows = file.read_row_group(group, columns=["id", "origin", "signature"])
            mine = pc.equal(rows["origin"], 0)  # not an earlier corpus's (against:) documents
            if later is not None:
                removed = pc.is_in(rows["id"], value_set=later)
                mine = pc.and_(mine, removed if scope == "removed" else pc.invert(removed))
            selected = np.flatnonzero(mine.to_numpy(zero_copy_only=False))
            for lo in range(0, len(selected), SIGNATURE_ROWS):  # bounded temporaries whatever the row group
                index = selected[lo:lo + SIGNATURE_ROWS]
                matrix = _matrix(rows["signature"].take(pa.array(index)), params.num_perm)
                best.add(estimate(matrix, signature), rows["id"].take(pa.array(index)),
                         [(i, group, int(r)) for r in index])
            searched += len(selected)
    candidates = best.items(with_payload=True)
    exact: dict[str, float] = {}
    if verify and candidates:
        exact = _exact_jaccard(output, source, shingles, candidates)
    ranked = sorted(candidates, key=lambda c: (-exact.get(c[1], c[0]), c[1]))[:k]
    results = [{"id": id_, "similarity": round(exact.get(id_, score), 6), "estimate": round(score, 6),
                "jaccard": round(exact[id_], 6) if id_ in exact else None} for score, id_, _ in ranked]
    stage_docs = output.stats["stages"].get(source.stage, {}).get("in", 0)
    not_searched = _scope_rows(output, scope) - searched if scope != "kept" else 0
    detail = (f"MinHash: estimated Jaccard against {source.stage}'s {params.num_perm}-permutation signatures "
              f"(word {params.ngram}-grams), " + (f"exact shingle Jaccard for the best {len(candidates)}"
                                                  if exact else "no stored shingles: estimates only"))
    return {"method": "minhash", "detail": detail, "searched": searched, "not_searched": max(not_searched, 0),
            **({"not_searched_why": f"removed before {source.stage} ({stage_docs:,} documents reached it): not "
                                    "signed; --method scan reads their text"} if not_searched > 0 else {}),
            "results": results}


def _exact_jaccard(output: RunOutput, source: SignatureSource, query: np.ndarray,
                   candidates: list[tuple[float, str, tuple[int, int, int]]]) -> dict[str, float]:
    """Exact Jaccard of the query's shingle set and each candidate's stored one (the row groups holding
    them only)."""
    by_group: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for _, id_, (i, group, row) in candidates:
        by_group.setdefault((i, group), []).append((id_, row))
    out = {}
    for (i, group), members in sorted(by_group.items()):
        file = pq.ParquetFile(source.paths[i], filesystem=output.filesystem)
        lists = file.read_row_group(group, columns=["shingles"])["shingles"]
        for id_, row in members:
            values = lists[row].values
            if values is None:
                continue
            mine = np.unique(values.to_numpy(zero_copy_only=False))
            inter = len(np.intersect1d(mine, query, assume_unique=True))
            out[id_] = inter / (len(mine) + len(query) - inter)
    return out


def _removed_ids(output: RunOutput, stages: list[str]) -> pa.Array:
    ids = []
    for stage in stages:
        dataset = output.dataset("removed", stage)
        if dataset is not None:
            ids.append(dataset.to_table(columns=["id"])["id"].combine_chunks())
    return pa.concat_arrays(ids) if ids else pa.array([], pa.string())


# ---- the slow path: every text --------------------------------------------------------------------------

def _by_scan(output: RunOutput, text: str, k: int, scope: str, asked: bool = False) -> dict[str, Any]:
    from curate.dedup.minhash import MinHashParams, shingle_hashes

    configured = [e["minhash_dedup"] for e in output.run.get("pipeline", {}).get("stages", []) if "minhash_dedup" in e]
    params = MinHashParams(**{key: value for key, value in configured[-1].items() if key in MinHashParams.model_fields}
                           ) if configured else MinHashParams()
    query, _ = query_shingles(text, params)
    best = _Best(k, minimum=0.0)
    searched = 0
    for kind in _kinds(scope):
        dataset = output.dataset(kind)
        if dataset is None:
            continue
        for batch in dataset.to_batches(columns=["id", "text"], batch_size=BATCH_ROWS):
            if not batch.num_rows:
                continue
            values, offsets = shingle_hashes(batch.column("text"), params)
            n = batch.num_rows
            docs = np.repeat(np.arange(n, dtype=np.uint64), np.diff(offsets))
            distinct = np.unique((docs << np.uint64(32)) | values.astype(np.uint64))  # each document's set
            owner = (distinct >> np.uint64(32)).astype(np.int64)
            sizes = np.bincount(owner, minlength=n)
            hits = np.bincount(owner[np.isin(distinct & np.uint64(0xFFFFFFFF), query)], minlength=n)
            jaccard = hits / np.maximum(sizes + len(query) - hits, 1)
            best.add(jaccard, batch.column("id"))
            searched += n
    results = [{"id": id_, "similarity": round(score, 6), "jaccard": round(score, 6)} for score, id_ in best.items()]
    why = "as asked" if asked else "the run kept no embeddings and no MinHash signatures"
    return {"method": "scan", "detail": f"exact Jaccard of word {params.ngram}-gram shingles, every document's text "
            f"read and shingled ({why}; slow on a large run)",
            "searched": searched, "not_searched": 0, "results": results}


# ---- shared ---------------------------------------------------------------------------------------------

class _Best:
    """The ``n`` highest scores above ``minimum`` seen so far (ties: smallest id first), batch by batch."""

    def __init__(self, n: int, minimum: float = -np.inf) -> None:
        self.n, self.minimum = n, minimum
        self.rows: list[tuple[float, str, Any]] = []

    def add(self, scores: np.ndarray, ids: pa.Array | pa.ChunkedArray, payload: list[Any] | None = None) -> None:
        keep = np.flatnonzero(scores > self.minimum)
        if len(self.rows) >= self.n:  # only what can enter the top n
            keep = keep[scores[keep] >= self.rows[-1][0]]
        if len(keep) > self.n:
            keep = keep[np.argpartition(-scores[keep], self.n - 1)[: self.n]]
        chosen = ids.take(pa.array(keep, pa.int64())).to_pylist()  # only these ids become Python strings
        fresh = [(float(scores[j]), id_, payload[j] if payload is not None else None)
                 for j, id_ in zip(keep, chosen, strict=True)]
        self.rows = sorted(self.rows + fresh, key=lambda r: (-r[0], r[1]))[: self.n]

    def items(self, with_payload: bool = False) -> list[tuple]:
        return list(self.rows) if with_payload else [(s, i) for s, i, _ in self.rows]


def _kinds(scope: str) -> tuple[str, ...]:
    return {"kept": ("kept",), "removed": ("removed",), "all": ("kept", "removed")}[scope]


def _scope_rows(output: RunOutput, scope: str) -> int:
    totals = output.stats["totals"]
    return sum(totals.get(kind, 0) for kind in _kinds(scope))


def _matrix(column: pa.Array | pa.ChunkedArray, width: int) -> np.ndarray:
    """A list column without nulls as a (rows × width) matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    if len(values) != len(column) * width:
        raise ValueError(f"vectors of {len(values) // max(len(column), 1)} values, expected {width}")
    return values.reshape(len(column), width)


def _locate(output: RunOutput, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per id: its URL, a snippet and where it is (kept, or removed by which stage and rule)."""
    found: dict[str, dict[str, Any]] = {}
    if not ids:
        return found
    for kind in ("kept", "removed"):
        dataset = output.dataset(kind)
        if dataset is None:
            continue
        names = dataset.schema.names
        columns = [c for c in ("id", "url", "text", "removed_by", "reason", "duplicate_of") if c in names]
        rows = dataset.to_table(columns=columns, filter=ds.field("id").isin(ids)).to_pylist()
        for row in rows:
            entry = {"url": row.get("url"), "snippet": _snippet(row.get("text"))}
            if kind == "kept":
                entry.update(where="kept", stage=None, reason=None)
            else:
                entry.update(where=f"removed by {row.get('removed_by')}", stage=row.get("removed_by"),
                             reason=row.get("reason"))
                if row.get("duplicate_of"):
                    entry["duplicate_of"] = row["duplicate_of"]
            found.setdefault(row["id"], entry)
    return found


def _snippet(text: Any) -> str:
    return " ".join(str(text or "").split())[:SNIPPET]


def format_similar(found: dict[str, Any]) -> str:
    scope = {"kept": "kept documents", "removed": "removed documents", "all": "kept and removed documents"}
    searched = f"  {found['searched']:,} {scope[found['scope']]} searched"
    if found["not_searched"]:
        searched += f"; {found['not_searched']:,} not ({found.get('not_searched_why', '')})"
    lines = [f"nearest to “{found['query']}”", f"  by {found['detail']}", searched]
    if found["method"] == "scan":
        lines.append("  (slow path: every text was read)")
    if not found["results"]:
        lines.append("  no document found" if found["method"] == "embedding" else
                     "  no document shares a word n-gram with the text")
    for r in found["results"]:
        if found["method"] == "embedding":
            how = "cosine"
        else:
            how = "exact" if r.get("jaccard") is not None else "estimate"
        where = r["where"] + (f": {r['reason']}" if r.get("reason") else "") + (
            f", twin {r['duplicate_of']}" if r.get("duplicate_of") else "")
        lines.append(f"{r['rank']:>3}. {r['similarity']:.3f} {how:<8} {r['id']}  {r['url'] or ''}")
        lines.append(f"     {where}")
        lines.append(f"     “{r['snippet']}”")
    return "\n".join(lines)

"""Throughput of WARC -> text -> language ID (-> heuristic filters), per core, against two references.

Three tools read the same corpus (``bench/corpus.py --plain``) pinned to ONE CPU core, one after another in
the same run, so their rates are comparable as ratios even on a noisy shared machine:

* **ours**: ``curate.execute.DocumentJob`` with ``warc_read -> extract -> language`` (the runner's code
  path, extraction in its time-limited child process, Parquet outputs in a temp dir), once bare and once with
  every heuristic filter that is registered (``gopher_repetition``, ``gopher_quality``, ``c4_quality``,
  ``fineweb_quality``, ``repetition``, ``contamination``; the missing ones are listed and skipped);
* **floor**: fastwarc + resiliparse ``extract_plain_text(main_content=True)`` + lid.176 ``predict`` in a
  plain loop: the least work that gives the same output, run before and after ours (drift check). It
  classifies the same prefix (``max_chars``) and applies the same threshold as the ``language`` stage;
* **datatrove** 0.10.1: ``WarcReader -> Trafilatura(favour_precision) -> LanguageFilter(lid.176) ->
  GopherRepetition -> GopherQuality -> C4Quality -> FineWebQuality -> JsonlWriter`` under
  ``LocalPipelineExecutor(tasks=1, workers=1)``, on the first ``--datatrove-records`` responses only
  (it runs at 10-30 docs/s).

Rates are response records per second of wall time (every tool gets the same records; "docs in" is how
many of them its reader accepted as HTML documents, "out" how many it kept). The corpus repeats its 528
pages, but every copy is respelled (``bench/corpus.py``), so the filters' memos see new chunks at
about the rate distinct text brings. Usage::

    python bench/corpus.py --plain --records 20000 # once: 20,000 responses in bench/_work/corpus
    python bench/extract.py                        # full run (~10 min on one core)
    python bench/extract.py --records 2000 --datatrove-records 300     # quick look
    python bench/extract.py --records 2000 --skip-datatrove --diagnose  # + in-process variant, cProfile
    python bench/extract.py --smoke      # 24 responses built in a temp dir: seconds, every tool
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / "bench" / "_work" / "corpus"
FILTERS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality", "repetition", "contamination")
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class Result:
    tool: str
    responses: int  # HTTP response records read: the rate's numerator, the same input for every tool
    docs_in: int
    docs_out: int
    seconds: float
    note: str = ""
    detail: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.responses / self.seconds if self.seconds else 0.0


# ---- corpus subsets --------------------------------------------------------------------------------

def subset(files: list[Path], responses: int | None, folder: Path) -> list[Path]:
    """WARC files holding exactly the first ``responses`` response records of ``files`` (all if None).

    Whole files are used as they are; the last one is cut at a record boundary (per-record gzip members
    make a byte prefix a valid WARC) into ``folder``.
    """
    if responses is None:
        return list(files)
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    chosen: list[Path] = []
    left = responses
    for path in files:
        if left <= 0:
            break
        previous, cut, seen = None, None, 0
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.any_type, parse_http=False):
                if rec.record_type == WarcRecordType.response:
                    if seen == left:
                        cut = previous[1] if previous and previous[0] == WarcRecordType.request else rec.stream_pos
                        break
                    seen += 1
                previous = (rec.record_type, rec.stream_pos)
        if cut is None:
            chosen.append(path)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            part = folder / path.name
            with open(path, "rb") as src, open(part, "wb") as dst:
                dst.write(src.read(cut))
            chosen.append(part)
        left -= seen
    return chosen


def count_responses(paths: list[Path]) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for path in paths:
        with open(path, "rb") as fh:
            n += sum(1 for _ in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=False))
    return n


def link_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding exactly ``paths`` (symlinks), for readers that take a folder (datatrove)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = folder / path.name
        if not target.exists():
            target.symlink_to(path.resolve())
    return folder


# ---- the three tools -------------------------------------------------------------------------------

def run_floor(paths: list[Path], keep: list[str], label: str = "floor") -> Result:
    """fastwarc + resiliparse + lid.176 in a plain loop: the least work giving the same output."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    from curate.stages.language import LanguageParams, lid176_path, load_fasttext

    model = load_fasttext(lid176_path())
    language_params = LanguageParams(keep=keep)  # the stage's defaults: same prefix, same threshold
    responses = docs_in = docs_out = 0
    t0 = time.perf_counter()
    for path in paths:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                responses += 1
                if rec.http_headers is None or rec.http_headers.status_code != 200:
                    continue
                content_type = rec.http_content_type
                body = rec.reader.read()
                if content_type and content_type.lower() not in HTML_TYPES:
                    continue
                docs_in += 1
                try:
                    html = body.decode("utf-8")
                except UnicodeDecodeError:
                    html = bytes_to_str(body, detect_encoding(body))
                text = extract_plain_text(html, main_content=True).strip()
                if not text:
                    continue
                labels, probs = model.predict(" ".join(text[: language_params.max_chars].split()), k=1)
                language = labels[0].removeprefix("__label__")
                if not keep or (language in keep and probs[0] >= language_params.min_score):
                    docs_out += 1
    return Result(label, responses, docs_in, docs_out, time.perf_counter() - t0)


def filter_stages(names: tuple[str, ...]) -> tuple[list, dict[str, str]]:
    """The registered filters among ``names`` that set up with default parameters; why the others did not."""
    from curate.config import ConfigError, build_stage
    from curate.schema import empty_documents

    stages, skipped = [], {}
    for name in names:
        try:
            stage = build_stage(name, {}, "bench", name)
        except ConfigError as exc:
            skipped[name] = "not registered" if "unknown stage" in str(exc) else str(exc).splitlines()[0]
            continue
        try:
            stage(empty_documents())  # runs setup(): a model that cannot load shows here, not per row
        except Exception as exc:  # noqa: BLE001 - reported and skipped
            skipped[name] = f"setup failed: {type(exc).__name__}: {exc}"
            continue
        stages.append(stage)
    return stages, skipped


def _run_file(path: Path, reader, stages: list, batch_size: int, out: Path) -> dict:
    """One WARC as the runner's first step runs it (same job, same column drops), into ``out``: its stats
    plus ``kept``. The bench's only contact with the executor, so an API change is met here alone."""
    from curate.commit import kept_dest
    from curate.config import Pipeline
    from curate.execute import DocumentJob, DocumentUnit
    from curate.io.fs import Location, file_id
    from curate.runner import drop_plan

    uri = str(path)
    drop_after = drop_plan(Pipeline("bench", __file__, batch_size, [reader, *stages]))
    job = DocumentJob(reader, stages, batch_size=batch_size, out=Location(str(out)), kept_dest=kept_dest(0, True),
                      storage_options={}, drop_after=drop_after)
    commit = job.run(DocumentUnit(0, file_id(uri), uri, uri))
    return commit.stats | {"kept": commit.rows("kept")}


def run_ours(paths: list[Path], keep: list[str], filters: list, batch_size: int, label: str,
             extract_params: dict | None = None) -> Result:
    """The real code path: :func:`_run_file` per WARC into a temp dir, stages torn down afterwards."""
    from curate.config import build_stage

    reader = build_stage("warc_read", {}, "bench", "reader")
    stages = [build_stage("extract", extract_params or {}, "bench", "extract"),
              build_stage("language", {"keep": keep}, "bench", "language"), *filters]
    out = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    responses = docs_in = kept = 0
    seconds: dict[str, float] = {"read": 0.0}
    reasons: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        for path in paths:
            stats = _run_file(path, reader, stages, batch_size, out)
            responses += stats["records"].get("response", 0)
            docs_in += stats["documents"]
            kept += stats["kept"]
            for name, stage_stats in stats["stages"].items():  # the reader's seconds are its read time
                key = "read" if name == reader.name else name
                seconds[key] = seconds.get(key, 0.0) + stage_stats["seconds"]
                for reason, n in stage_stats["reasons"].items():
                    reasons[f"{name}:{reason}"] = reasons.get(f"{name}:{reason}", 0) + n
        for stage in stages:
            stage.close()
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    seconds["other"] = elapsed - sum(seconds.values())
    return Result(label, responses, docs_in, kept, elapsed, detail={"seconds": seconds, "reasons": reasons})


def _total(value) -> float:
    return value.get("total", 0) if isinstance(value, dict) else value


def run_datatrove(paths: list[Path], responses: int, keep: list[str], work: Path, timeout_s: float,
                  log_path: Path) -> Result:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter)
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from loguru import logger

    from curate.stages.language import lid176_path

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    folder = link_folder(paths, work / "datatrove-input")
    language = LanguageFilter(languages=keep or None)
    language.model.MODEL_URL = lid176_path()  # offline: the bundled lid.176.ftz instead of a download
    out = work / "datatrove-output"
    shutil.rmtree(out, ignore_errors=True)
    pipeline = [
        WarcReader(str(folder), glob_pattern="*.warc.gz"),
        Trafilatura(favour_precision=True, timeout=timeout_s),
        language,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        JsonlWriter(str(out), output_filename="out.jsonl.gz"),
    ]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=str(work / "datatrove-logs"),
                                     skip_completed=False)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    with open(log_path, "wb") as log:  # datatrove adds its own INFO stderr sink per task: keep it in a file
        sys.stderr.flush()
        os.dup2(log.fileno(), 2)
        try:
            t0 = time.perf_counter()
            executor.run()
            elapsed = time.perf_counter() - t0
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    stats = json.loads((work / "datatrove-logs" / "stats.json").read_text())
    by_step = {step["name"]: step["stats"] for step in stats}
    reader = next(v for k, v in by_step.items() if "Warc" in k)
    writer = next(v for k, v in by_step.items() if "Jsonl" in k)
    docs_in = int(_total(reader.get("documents", 0)))
    docs_out = int(_total(writer.get("total", 0)))
    steps = {k: {s: _total(v) for s, v in st.items() if s in ("total", "forwarded", "dropped", "timeout", "documents")}
             for k, st in by_step.items()}
    return Result("datatrove", responses, docs_in, docs_out, elapsed, detail={"steps": steps})


# ---- main ------------------------------------------------------------------------------------------

def engines_table(limit: int | None = None, rounds: int = 3) -> None:
    """Every extraction engine on the shared gold pages, same loop, same core: pages/s (CPU time, decode
    included, median of interleaved rounds) next to the token P/R/F1 on the scrapinghub gold bodies and
    the trafilatura ``with``/``without`` snippet shares (scored as tests/stages/test_extract.py does).
    The floor is the decoding alone (what every engine pays before extracting)."""
    import gzip
    import hashlib
    import statistics

    sys.path.insert(0, str(REPO / "tests" / "stages"))
    from test_extract import scores  # the tests' scoring, so the table and the floors agree

    from curate.io.html import decode_html, finish_pages, prepare_page
    from curate.stages.extract import ExtractParams

    html = REPO.parent / "shared" / "data" / "html"
    gold = {f"{k}.html.gz": v["articleBody"] for k, v in
            json.loads((html / "scrapinghub-aeb" / "ground-truth.json").read_text(encoding="utf-8")).items()}
    evaldata = {f"{v['file']}.gz": v for v in
                json.loads((html / "trafilatura" / "evaldata.json").read_text(encoding="utf-8")).values()}
    pages = [(s, p.name, gzip.decompress(p.read_bytes())) for s in ("scrapinghub-aeb", "trafilatura")
             for p in sorted((html / s / "html").glob("*.html.gz"))[:limit]]
    engines = {"floor (decode)": None, "resiliparse": "resiliparse", "trafilatura": "trafilatura",
               "curate": "curate"}
    def call(engine: str | None):
        """Texts of a list of pages, as the extract stage gets them from a batch (the curate engine
        classifies the batch's lines together)."""
        if engine is None:
            return lambda raws: [decode_html(raw, None)[0] for raw in raws]
        params = ExtractParams(engine=engine)
        return lambda raws: [e.text for e in finish_pages([prepare_page(raw, None, params) for raw in raws], params)]

    calls = {name: call(engine) for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    texts: dict[str, dict[str, str]] = {}
    order = list(engines) + [n for n in engines if n != "trafilatura"] * (rounds - 1)  # trafilatura: once (slow)
    for name in order:
        start = time.process_time()
        out = dict(zip([page for _, page, _ in pages], calls[name]([raw for _, _, raw in pages]), strict=True))
        times[name].append(time.process_time() - start)
        texts.setdefault(name, out)
    print(f"\nengines on the shared gold pages ({len(pages)} pages, one core, CPU time, median of rounds):")
    print(f"  {'engine':<15} {'pages/s':>8}  {'AEB P':>6} {'R':>6} {'F1':>6}  {'with':>6} {'without':>8}")
    rate = {name: len(pages) / statistics.median(t) for name, t in times.items()}
    for name, engine in engines.items():
        if engine is None:
            print(f"  {name:<15} {rate[name]:8.1f}")
            continue
        text = texts[name]
        pairs = [(gold[n], text[n]) for s, n, _ in pages if s == "scrapinghub-aeb"]
        sc = scores(pairs)
        found = wanted = absent = unwanted = 0
        for s, n, _ in pages:
            if s == "trafilatura" and n in evaldata:
                squashed = " ".join(text[n].split())
                found += sum(" ".join(w.split()) in squashed for w in evaldata[n].get("with", []))
                wanted += len(evaldata[n].get("with", []))
                absent += sum(" ".join(w.split()) not in squashed for w in evaldata[n].get("without", []))
                unwanted += len(evaldata[n].get("without", []))
        print(f"  {name:<15} {rate[name]:8.1f}  {sc['precision']:6.3f} {sc['recall']:6.3f} {sc['f1']:6.3f}  "
              f"{found / max(wanted, 1):6.3f} {absent / max(unwanted, 1):8.3f}")
    halves = [sum(1 for s, n, _ in pages if s == "scrapinghub-aeb" and hashlib.sha1(n.encode()).digest()[0] & 1 == h)
              for h in (0, 1)]
    print(f"  (curate's model was trained on these pages: its held-out figures, halves of {halves[0]} and "
          f"{halves[1]} pages\n   each scored by the other half's model, are printed by "
          "classifiers/boilerplate/train.py and asserted by tests/stages/test_extract.py)")
    print(f"ratio curate/trafilatura pages/s: {rate['curate'] / rate['trafilatura']:.2f}x (goal >= 5); "
          f"curate/resiliparse: {rate['curate'] / rate['resiliparse']:.2f}x (goal >= 0.6)")


def pin_one_core(cpu: int | None) -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})  # children (extraction sandbox, datatrove workers) inherit it
    return cpu


def print_result(r: Result) -> None:
    print(f"  {r.tool:<26} responses {r.responses:>6}  docs in {r.docs_in:>6}  out {r.docs_out:>6}  "
          f"{r.seconds:8.1f} s  {r.rate:8.1f} docs/s"
          + (f"  ({r.note})" if r.note else ""), flush=True)


def profile_ours(paths: list[Path], keep: list[str], filters: list, batch_size: int, top: int = 25) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_ours(paths, keep, filters, batch_size, "ours (profiled)")
    profiler.disable()
    print("\n-- cProfile of ours (parent process; time in the extraction child shows as wait/poll) --")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="folder of *.warc.gz from corpus.py --plain")
    ap.add_argument("--records", type=int, default=None, help="use only the first N responses (default all)")
    ap.add_argument("--datatrove-records", type=int, default=1000, help="responses for the datatrove run")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--keep", default="en", help="comma-separated languages to keep ('' keeps all)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last allowed one)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    ap.add_argument("--diagnose", action="store_true",
                    help="also run ours with in-process extraction (timeout_s=0) and print a cProfile of ours")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--engines-only", action="store_true", help="only the extraction engines' table")
    ap.add_argument("--smoke", action="store_true",
                    help="run every tool on corpus.py --smoke --plain's 24 responses, built in a temp dir "
                    "(datatrove on 12)")
    args = ap.parse_args(argv)

    keep = [k for k in args.keep.split(",") if k]
    cpu = None if args.no_pin else pin_one_core(args.cpu)
    engines_table(limit=8 if args.smoke else None, rounds=1 if args.smoke else 3)
    if args.engines_only:
        return 0
    work = Path(tempfile.mkdtemp(prefix="curate-bench-work-"))
    try:
        if args.smoke:
            import corpus

            args.corpus, args.datatrove_records = str(work / "corpus"), 12  # datatrove: ~1 s on these
            corpus.main(["--smoke", "--plain", "--out", args.corpus])
        files = sorted(Path(args.corpus).glob("*.warc.gz"))
        if not files:
            print(f"no *.warc.gz in {args.corpus}: run bench/corpus.py --plain first", file=sys.stderr)
            return 2
        paths = subset(files, args.records, work / "main")
        filters, skipped = filter_stages(FILTERS)
        print(f"corpus: {len(paths)} WARC file(s) from {args.corpus}"
              f"{f', first {args.records} responses' if args.records else ''}; pinned to CPU {cpu}; keep {keep}")
        print(f"filters run: {[s.name for s in filters] or 'none'}; skipped: "
              + (", ".join(f"{k} ({v})" for k, v in skipped.items()) or "none"), flush=True)

        results: list[Result] = []
        floor_a = run_floor(paths, keep, "floor (before)")
        print_result(floor_a)
        ours_bare = run_ours(paths, keep, [], args.batch_size, "ours: extract+language")
        print_result(ours_bare)
        results += [floor_a, ours_bare]
        ours_full = None
        if filters:
            ours_full = run_ours(paths, keep, filters, args.batch_size, f"ours: + {len(filters)} filters")
            print_result(ours_full)
            results.append(ours_full)
        if args.diagnose:
            inproc = run_ours(paths, keep, [], args.batch_size, "ours: in-process extract",
                              extract_params={"timeout_s": 0})
            print_result(inproc)
            results.append(inproc)
        floor_b = run_floor(paths, keep, "floor (after)")
        print_result(floor_b)
        results.append(floor_b)
        datatrove, same = None, []
        if not args.skip_datatrove:
            dt_paths = subset(files, args.datatrove_records, work / "datatrove-subset")
            log_path = REPO / "bench" / "_work" / "datatrove.log"
            datatrove = run_datatrove(dt_paths, count_responses(dt_paths), keep, work, timeout_s=2.0,
                                      log_path=log_path)
            datatrove.note = f"first {args.datatrove_records} responses; log {log_path.relative_to(REPO)}"
            print_result(datatrove)
            results.append(datatrove)
            # The same responses through ours and the floor: a like-for-like check of the ratio above.
            same = [run_ours(dt_paths, keep, filters, args.batch_size, f"ours +{len(filters)} filters, same"),
                    run_floor(dt_paths, keep, "floor, same subset")]
            for r in same:
                print_result(r)
            results += same

        floor_rate = (floor_a.rate + floor_b.rate) / 2
        print("\nseconds by step, ours (extract includes the IPC to its child process):")
        for r in (ours_bare, ours_full):
            if r is not None:
                print(f"  {r.tool:<26} " + "  ".join(f"{k} {v:.1f}" for k, v in r.detail["seconds"].items()))
        print("\nratios (docs/s per core):")
        for r in (ours_bare, ours_full):
            if r is None:
                continue
            line = f"  {r.tool:<26} / floor {r.rate / floor_rate:5.2f}  (floor {floor_rate:.1f} docs/s, " \
                   f"before/after {floor_a.rate:.1f}/{floor_b.rate:.1f})"
            if datatrove is not None and datatrove.rate:
                line += f"   / datatrove {r.rate / datatrove.rate:6.1f}"
            print(line)
        if datatrove is not None and datatrove.rate:
            for r in same:
                per_doc = (f"{(r.docs_in / r.seconds) / (datatrove.docs_in / datatrove.seconds):.1f}"
                           if datatrove.docs_in else "n/a: datatrove accepted none")
                print(f"  {r.tool:<26} / datatrove {r.rate / datatrove.rate:6.1f}   (per accepted document: {per_doc})")
            print(f"  datatrove's reader accepted {datatrove.docs_in} of {datatrove.responses} responses (libmagic "
                  "decides the type when WARC-Identified-Payload-Type is absent)")
        if datatrove is not None:
            print(f"  datatrove steps: {json.dumps(datatrove.detail['steps'], ensure_ascii=False)}")
        if args.json:
            Path(args.json).write_text(json.dumps([r.__dict__ | {"rate": r.rate} for r in results], indent=1))
        if args.diagnose:
            profile_ours(paths, keep, filters, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # LocalPipelineExecutor and the extraction sandbox re-import the main module
    sys.exit(main())

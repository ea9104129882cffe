"""``bench/corpus.py --smoke`` plants what its manifest says, byte for byte the same each time, and
``bench/run_all.py --smoke`` runs both whole pipelines to their ratio lines with curate's conservation OK.

The manifest is what a bench scores against, so it is checked against the WARC files themselves (read with
warcio, not the builder's own code). The benches read the shared data and so do these tests: without it
they fail, never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def build(out: Path) -> dict:
    assert SHARED_DATA.is_dir(), f"the benches need the shared data at {SHARED_DATA} (set CURATE_SHARED_DATA)"
    result = subprocess.run([sys.executable, "bench/corpus.py", "--smoke", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=ENV, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "manifest.json").read_text())


def read_warcs(folder: Path) -> dict[str, dict]:
    """Every record of the corpus by id: type, HTTP status, Content-Type, target, refers-to, payload."""
    from warcio.archiveiterator import ArchiveIterator

    records = {}
    for path in sorted(folder.glob("corpus-*.warc.gz")):
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh):
                http = record.http_headers
                records[record.rec_headers.get_header("WARC-Record-ID").strip("<>")] = {
                    "file": path.name, "type": record.rec_type, "status": http.get_statuscode() if http else None,
                    "content_type": http.get_header("Content-Type") if http else None,
                    "location": http.get_header("Location") if http else None,
                    "payload_type": record.rec_headers.get_header("WARC-Identified-Payload-Type"),
                    "refers_to": (record.rec_headers.get_header("WARC-Refers-To") or "").strip("<>"),
                    "host": re.sub(r"^[a-z]+://([^/?#]+).*$", r"\1",
                                   record.rec_headers.get_header("WARC-Target-URI") or ""),
                    "body": record.content_stream().read()}
    return records


def test_corpus_smoke_plants_what_its_manifest_says_and_is_deterministic(tmp_path: Path) -> None:
    manifest = build(tmp_path / "a")
    records = read_warcs(tmp_path / "a")
    planted = manifest["planted"]

    per_file = Counter((r["file"], r["type"]) for r in records.values())
    for entry in manifest["files"]:
        assert entry["records"] == {t: n for (f, t), n in per_file.items() if f == entry["file"]}
    html_200 = [r for r in records.values() if r["type"] == "response" and r["status"] == "200"
                and (r["content_type"] or "text/html").startswith("text/html")]
    assert len(html_200) == manifest["records"] == 24
    assert not any(r["payload_type"] for r in records.values()), "no record may carry a payload type"
    assert sum(1 for r in html_200 if r["content_type"] is None) == manifest["content_type"].get("none", 0)

    # one of each kind at the smoke sizes, each exactly as recorded
    assert manifest["counts"] == {"exact_duplicates": 1, "near_duplicates": 1, "pathological_pages": 1,
                                  "non_html": 1, "non_200": 1, "revisits": 1, "pathological_source_pages": 5}
    for dup in planted["exact_duplicates"]:
        assert records[dup["id"]]["body"] == records[dup["duplicate_of"]]["body"]
    for dup in planted["near_duplicates"]:
        near, original = records[dup["id"]]["body"], records[dup["duplicate_of"]]["body"]
        assert near != original and len(near) == len(original) and dup["edited_words"] > 0
    for page in planted["pathological_pages"]:
        assert records[page["id"]]["type"] == "response" and records[page["id"]]["status"] == "200"
    [source] = planted["pathological_sources"]
    assert len(source["ids"]) == 5
    assert {i for i, r in records.items() if r["host"] == source["host"] and r["type"] == "response"} == set(
        source["ids"]), "a pathological source holds only its planted pages"
    for other in planted["non_html"]:
        assert records[other["id"]]["content_type"] == other["content_type"]
        assert "html" not in other["content_type"]
    for bad in planted["non_200"]:
        got = records[bad["id"]]
        assert got["type"] == "response" and int(got["status"]) == bad["status"]
        assert (got["location"] is not None) == (bad["status"] == 301)
    for revisit in planted["revisits"]:
        assert records[revisit["id"]]["type"] == "revisit"
        assert records[revisit["id"]]["refers_to"] == revisit["refers_to"]
        assert records[revisit["refers_to"]]["type"] == "response"
    assert sum(1 for r in records.values() if r["type"] == "revisit") == manifest["counts"]["revisits"]
    assert sum(1 for r in records.values() if r["type"] == "response") == (
        manifest["records"] + manifest["counts"]["non_html"] + manifest["counts"]["non_200"])

    again = build(tmp_path / "b")
    assert again == manifest
    for entry in manifest["files"]:
        digests = {hashlib.sha256((tmp_path / d / entry["file"]).read_bytes()).hexdigest() for d in ("a", "b")}
        assert len(digests) == 1, f"{entry['file']} differs between two builds with the same seed"


def test_run_all_smoke_prints_its_ratios_with_conservation_ok() -> None:
    assert SHARED_DATA.is_dir(), f"the benches need the shared data at {SHARED_DATA} (set CURATE_SHARED_DATA)"
    result = subprocess.run([sys.executable, "bench/run_all.py", "--smoke"], cwd=REPO, capture_output=True,
                            text=True, timeout=240, env=ENV, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    expected = [
        r"ratio curate/datatrove end to end, the same 12 responses \(both measured\): \d+\.\dx",
        r"ratio curate/datatrove end to end, \d+ responses \(datatrove scaled from 12\): \d+\.\dx",
        r"scaling: --workers 1 .* ratio w2/w1 \d+\.\d\d",
        (r"ratio curate/datatrove end to end, 2 workers each \(the same CPUs busy on both sides\): the same 12 "
         r"responses in 2 files \(both measured\) \d+\.\dx; \d+ responses \(datatrove scaled from 12\) \d+\.\dx"),
        (r"memory flatness \(--workers 2\): peak RSS per worker [1-9]\d* MB at \d+ responses, [1-9]\d* MB at \d+: "
         r"ratio 2x/1x \d+\.\d\d"),
        r"  extract +[1-9]\d* +\d+ +\d+\.\d \| +[1-9]\d* +\d+ +\d+\.\d \| +\d+\.\dx",
        r"  tokenize +[1-9]\d* +[1-9]\d* +\d+\.\d \| .*\(cl100k_base; datatrove [1-9]\d* tokens, curate [1-9]\d*\)",
        r"  quality +[1-9]\d* +\d+ +\d+\.\d \| +\(none in datatrove\)",  # the recipe's classify line put back
        r"  language +same decision +\d+\.\d% of +[1-9]\d* documents both reached",
        r"planted exact duplicates: \d+ of 1 pairs reached minhash_dedup",
        r"planted pathological sources \(1 hosts, 5 pages\): removed by .*report: forum\.\w+\.net 5/5",
        r"planted non-HTML, non-200 and revisit records read as documents: 0 of 3 \(expected 0\)",
    ]
    missing = [pattern for pattern in expected if not re.search(pattern, output)]
    assert not missing, f"{missing} not in:\n{output}"
    conservation = re.findall(r"curate conservation \((.*?)\): (\w+)", output)
    assert [label for label, _ in conservation] == ["1x", "--workers 1", "subset", "subset, w2", "2x"], output
    assert all(state == "OK" for _, state in conservation), output

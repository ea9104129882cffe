"""From the CLI on real pages: ``curate decontam build`` then a run with ``decontaminate`` and ``pii`` (the
FineWeb recipe's order), the removal naming the benchmark item, personal data redacted in what is written,
conservation, and ``curate audit pii`` showing before/after snippets."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from decontam.test_decontam import detokenise
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curate.cli import main

#: Real pages with contact data in their text (German Impressum footers, a US news page).
PAGES = ("bund-naturschutz.de-habeck.html.gz", "ekhn.de-Pflegefinanzierung.html.gz", "ditb.de-Propheten.html.gz",
         "gruene-bundestag.de-COP26.html.gz", "nnz-online.de-Quantensprung.html.gz", "talent.ch.5031.html.gz")
WIKITEXT_LINE = 1384  # 1-based: the passage planted into the last page


def write_warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, html in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            ids = {"WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>",
                   "WARC-Date": "2024-05-01T00:00:00Z"}
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(html), http_headers=headers,
                                               warc_headers_dict=ids)
            writer.write_record(record)


def test_decontaminate_and_pii_from_the_cli(shared_data: Path, ray_session, tmp_path: Path, capsys) -> None:
    wikitext = shared_data / "text" / "wikitext-2.valid.txt"
    index = tmp_path / "evals.idx"
    assert main(["decontam", "build", str(wikitext), "-o", str(index)]) == 0
    passage = " ".join(detokenise(wikitext.read_text("utf-8").split("\n")[WIKITEXT_LINE - 1]).split()[:70])
    root = shared_data / "html" / "trafilatura" / "html"
    pages = [(f"https://{name.removesuffix('.html.gz')}/", gzip.decompress((root / name).read_bytes()))
             for name in PAGES]
    url, html = pages[-1]
    pages[-1] = (url, html.replace(b"<p>", f"<p>{passage.upper()}</p><p>".encode(), 1))
    warc = tmp_path / "pages.warc.gz"
    write_warc(warc, pages)
    pipeline = tmp_path / "privacy.yaml"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {main_content: false}\n  - language: {keep: []}\n"
                        f"  - decontaminate: {{index: {index}}}\n  - pii: {{}}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", str(warc), "-o", str(out), "--no-progress"]) == 0
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"]
    removed = pq.read_table(out / "removed" / "decontaminate").to_pylist()
    assert [(r["url"], r["reason"]) for r in removed] == [(pages[-1][0], f"wikitext-2.valid:{WIKITEXT_LINE}")]
    kept = pq.read_table(out / "kept").to_pylist()
    assert len(kept) == len(PAGES) - 1
    assert sum(r["pii_email_count"] for r in kept) >= 5 and sum(r["pii_phone_count"] for r in kept) >= 5
    written = b"".join(p.read_bytes() for p in out.rglob("*.parquet") if "/work/" not in str(p))
    for value in (b"presse@bund-naturschutz.de", b"info@ekhn.de", b"50 80 00"):
        assert value not in written  # not in kept/, removed/ or stats/
    capsys.readouterr()
    assert main(["audit", "pii", str(out), "-n", "2"]) == 0
    shown = capsys.readouterr().out
    assert "email" in shown and "before (shape)" in shown and "<EMAIL>" in shown and "•" in shown
    assert main(["audit", "why", str(out), removed[0]["id"]]) == 0
    assert f"wikitext-2.valid:{WIKITEXT_LINE}" in capsys.readouterr().out


def test_fineweb_recipe_with_its_decontaminate_line_put_back(shared_data: Path, ray_session, tmp_path: Path) -> None:
    """The recipe's commented `decontaminate` stanza, uncommented as its comment says, runs as written."""
    recipe = (Path(__file__).resolve().parents[2] / "pipelines" / "fineweb.yaml").read_text()
    line = "  # - decontaminate: {index: evals.idx}"
    assert line in recipe
    index = tmp_path / "evals.idx"
    assert main(["decontam", "build", str(shared_data / "text" / "wikitext-2.valid.txt"), "-o", str(index)]) == 0
    pipeline = tmp_path / "fineweb.yaml"
    pipeline.write_text(recipe.replace(line, line.replace("# ", "", 1).replace("evals.idx", str(index))))
    out = tmp_path / "out"
    warc = shared_data / "warc" / "dolma-wget-sample-0000.warc.gz"
    assert main(["run", str(pipeline), "-i", str(warc), "-o", str(out), "--no-progress"]) == 0
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"]
    assert list(stats["stages"])[-4:] == ["minhash_dedup", "decontaminate", "pii", "tokenize"]

"""One real run shared by the audit tests: the FineWeb recipe (its pii stage included) over every WARC of
../shared/data/warc, with exact dedup before MinHash and a tokenize into shards at the end (so the funnel
reaches tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def audited_run(shared_data: Path, ray_session, tmp_path_factory) -> Path:
    """The output folder of ``curate run`` (FineWeb stages + exact_dedup + tokenize) over the shared WARCs."""
    from curate.cli import main

    recipe = (REPO / "pipelines" / "fineweb.yaml").read_text()
    pipeline = tmp_path_factory.mktemp("audit-pipeline") / "audit.yaml"
    minhash = "  - minhash_dedup: {threshold: 0.8}"
    recipe = recipe.replace(minhash, "  - exact_dedup: {}\n" + minhash)
    tokenize = "  - tokenize: {tokenizer: cl100k_base, format: megatron}"
    assert tokenize in recipe
    pipeline.write_text(recipe.replace(tokenize, tokenize.replace("}", ", shard_tokens: 20000}")))
    out = tmp_path_factory.mktemp("audit-run") / "out"
    warcs = sorted(str(p) for p in (shared_data / "warc").iterdir() if p.name.endswith((".warc.gz", ".warc")))
    assert main(["run", str(pipeline), "-i", *warcs, "-o", str(out), "--no-progress", "--workers", "2"]) == 0
    return out

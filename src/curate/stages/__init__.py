"""Built-in per-document and global stages; importing this module registers them."""

from curate.io import corpus, warc  # noqa: F401
from curate.classify import stage as classify_stage, top  # noqa: F401
from curate.decontam import stage as decontam_stage  # noqa: F401
from curate.dedup import exact, minhash  # noqa: F401
from curate.shards import stage as shards_stage  # noqa: F401
from curate.stages import contamination, extract, heuristics, language, pii, quarantine, repetition, url_filter  # noqa: F401

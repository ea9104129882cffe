"""``word_count``: a plug-in document stage, found by curate through the ``curate.stages`` entry point."""

from __future__ import annotations

import pyarrow as pa

from curate.schema import set_column
from curate.stage import DocumentStage
from curate_example_plugin.words import word_counts


class WordCount(DocumentStage):
    """Adds ``word_count_words``: words per document, as ``keyword_topic`` counts them (so its rates can be
    turned back into hits, and length filters downstream need no second tokenizer)."""

    name = "word_count"
    reads = ("text",)

    def process(self, batch: pa.Table) -> pa.Table:
        return set_column(batch, f"{self.name}_words", pa.array(word_counts(batch["text"]), pa.int64()))

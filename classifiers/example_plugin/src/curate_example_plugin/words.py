"""One definition of a word for the classifier and the stage, so ``word_count_words`` is the denominator
of ``keyword_topic``'s rates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Words are runs of letters, combining marks and digits: punctuation, apostrophes and hyphens separate
#: them, so "game's" contains the keyword "game", and a keyword "co-op" is the phrase "co op".
_SEPARATOR = r"[^\pL\pM\pN]+"


def words(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Every lower-cased word of ``texts`` in order, and the index of the text each word comes from.

    Arrow's RE2 kernels split a whole batch at once; a null text has no words.
    """
    lists = pc.split_pattern_regex(pc.utf8_lower(texts), _SEPARATOR)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    flat = pc.list_flatten(lists)
    nonempty = pc.greater(pc.utf8_length(flat), 0)  # a text starting or ending with a separator
    parents = pc.list_parent_indices(lists).filter(nonempty)
    return flat.filter(nonempty), parents.to_numpy(zero_copy_only=False)


def word_counts(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words per text (int64, zero for an empty or null text)."""
    _, parents = words(texts)
    return np.bincount(parents, minlength=len(texts)).astype(np.int64)

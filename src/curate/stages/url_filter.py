"""URL filter: drop documents whose URL is blocklisted or names adult content, before reading any text.

The first filter of the FineWeb recipe (datatrove's ``URLFilter``; RefinedWeb §G.1): it reads only the URL,
so it is the cheapest way to drop adult sites that text filters would pass page by page. Rules, in the order
that picks the reason when several fire:

* ``blocked_domain``: the host or any parent domain is listed (``example.com`` blocks ``www.example.com`` and
  ``a.b.example.com``, never ``notexample.com``);
* ``blocked_url``: the URL, or a parent path of it, is listed (UT1 ``urls`` semantics: scheme, ``www.``,
  case and a trailing ``/`` are ignored);
* ``banned_word``: a banned word is a token of the URL (lowercased, split on non-alphanumerics);
* ``soft_banned_words``: at least ``soft_word_threshold`` distinct soft-banned words are tokens;
* ``banned_subword``: a banned subword occurs in the URL lowercased with non-alphanumerics dropped.

Deliberate differences from datatrove: every comparison is case-insensitive (datatrove's word rules miss
``/PORN/``); a domain entry also blocks subdomains below a listed subdomain and IP hosts (datatrove checks
only the full host and the public-suffix registered domain); URL entries match normalised parent paths
(datatrove compares raw strings, which never equal UT1's scheme-less entries).

Lists are sorted arrow arrays searched with ``search_sorted``: the 4.5M-domain UT1 blocklist costs about
150 MB per worker instead of about 1 GB as a Python set, and every rule runs column-wise.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import tarfile
from pathlib import PurePosixPath

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams

#: [scheme://][userinfo@]host[:port]<path?query>[#fragment]; the scheme is optional because UT1 ``urls``
#: entries have none.
_URL_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)(?::[0-9]*)?(?P<rest>[^#]*)"
_SEPARATORS = "[^a-z0-9]+"
_NULL = pa.nulls(1, pa.string())[0]  # not pa.scalar(None, ...): that imports pandas (0.2 s) at start-up


class UrlFilterParams(StageParams):
    blocklist_files: list[str] = Field(
        default_factory=list,
        description="domain lists (one per line, '#' comments) or UT1 tarballs (*.tar.gz with <category>/domains "
        "and <category>/urls; top-level domains/urls files, as in datatrove's copy, are always read)",
    )
    categories: list[str] = Field(
        default_factory=lambda: ["adult"], description="UT1 categories read from blocklist tarballs"
    )
    datatrove_blocklist: bool = Field(
        False,
        description="also read the UT1-derived tarball datatrove ships (4.5M domains; ~5 s and ~150 MB per worker)",
    )
    block_domains: list[str] = Field(default_factory=list, description="domains blocked with their subdomains")
    block_urls: list[str] = Field(default_factory=list, description="URLs blocked with the paths below them")
    builtin_word_lists: bool = Field(
        True, description="use the word lists in curate/stages/data/url_*.txt; the lists below add to them"
    )
    banned_words: list[str] = Field(default_factory=list, description="URL tokens that remove a document alone")
    soft_banned_words: list[str] = Field(
        default_factory=list, description="URL tokens that remove a document when soft_word_threshold co-occur"
    )
    soft_word_threshold: int = Field(2, ge=1, description="distinct soft-banned tokens that remove (datatrove: 2)")
    banned_subwords: list[str] = Field(
        default_factory=list, description="substrings of the URL with non-alphanumerics dropped"
    )


def datatrove_blocklist_path() -> str:
    """The blocklist tarball inside the installed datatrove package, found without importing datatrove."""
    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("datatrove_blocklist needs the 'datatrove' package installed")
    path = os.path.join(spec.submodule_search_locations[0], "assets", "url_filterblacklistsv0_3_0.tar.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"datatrove is installed but {path} is missing")
    return path


class SortedSet:
    """An immutable string set held as one sorted arrow array: compact, and probed a whole column at a time."""

    def __init__(self, values: pa.Array) -> None:
        values = values.filter(pc.fill_null(pc.not_equal(values, ""), False))
        values = values.take(pc.array_sort_indices(values))
        if len(values) > 1:  # drop adjacent duplicates
            keep = pa.concat_arrays([pa.array([True]), pc.not_equal(values[1:], values[:-1])])
            values = values.filter(keep)
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def contains(self, needles: pa.Array) -> pa.Array:
        """True where the needle is in the set; false for nulls."""
        if not len(self.values) or not len(needles):
            return pa.array(np.zeros(len(needles), bool))
        index = pc.min_element_wise(pc.search_sorted(self.values, needles), len(self.values) - 1)
        return pc.fill_null(pc.equal(self.values.take(index), needles), False)


def list_entries(text: str) -> pa.Array:
    """Entries of a list file: lines without '#' comments and surrounding whitespace, empty ones dropped."""
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    lines = pc.utf8_trim_whitespace(pc.replace_substring_regex(lines, "#.*", ""))
    return lines.filter(pc.not_equal(lines, "")).cast(pa.string())


def read_blocklist(path: str, categories: list[str]) -> tuple[list[pa.Array], list[pa.Array]]:
    """Domain and URL entries of one blocklist file: a plain domain list or a UT1 tarball."""
    with fsspec.open(path, "rb") as f:
        if not path.endswith((".tar.gz", ".tgz", ".tar")):
            return [list_entries(f.read().decode("utf-8", "replace"))], []
        domains, urls = [], []
        with tarfile.open(fileobj=f, mode="r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                category = name.parent.name  # '' for the top-level lists of datatrove's merged copy
                if not member.isfile() or name.name not in ("domains", "urls"):
                    continue
                if category and category not in categories:
                    continue
                entries = list_entries(tar.extractfile(member).read().decode("utf-8", "replace"))
                (domains if name.name == "domains" else urls).append(entries)
    return domains, urls


def builtin_words(name: str) -> pa.Array:
    """A word list shipped as package data, so a pipeline needs no file of its own for the defaults."""
    return list_entries((importlib.resources.files("curate.stages") / "data" / name).read_text("utf-8"))


def normalise_hosts(hosts: pa.Array) -> pa.Array:
    """Lowercase, no trailing root dot; empty hosts become null."""
    hosts = pc.replace_substring_regex(pc.ascii_lower(hosts), r"\.$", "")
    return pc.if_else(pc.equal(hosts, ""), _NULL, hosts)


def url_parts(urls: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Normalised host and URL key (host without ``www.`` + lowercased path and query, no trailing ``/``)."""
    parsed = pc.extract_regex(urls, _URL_PATTERN)
    host = normalise_hosts(pc.struct_field(parsed, "host"))
    rest = pc.replace_substring_regex(pc.ascii_lower(pc.struct_field(parsed, "rest")), "/+$", "")
    key = pc.binary_join_element_wise(pc.replace_substring_regex(host, r"^www\.", ""), rest, "")
    return host, key


def normalise_words(words: pa.Array) -> pa.Array:
    """What a word can match: lowercase alphanumerics only, as URLs are tokenised ("blow job" -> "blowjob")."""
    return pc.replace_substring_regex(pc.ascii_lower(words), _SEPARATORS, "")


def _group(values: pa.Array, pattern: str) -> pa.Array:
    """The named group ``p`` of ``pattern`` searched in each value; null where it does not match."""
    return pc.struct_field(pc.extract_regex(values, pattern), "p")


def _first_match(entries: SortedSet, candidates: list[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """Per row: how many candidates are listed, and the first listed one."""
    count = pa.array(np.zeros(len(candidates[0]), np.float64))
    first = pa.nulls(len(candidates[0]), pa.string())
    for candidate in candidates:
        hit = entries.contains(candidate)
        count = pc.add(count, pc.cast(hit, pa.float64()))
        first = pc.coalesce(first, pc.if_else(hit, candidate, _NULL))
    return count, first


def _ancestors(start: pa.Array, pattern: str) -> list[pa.Array]:
    """``start`` and its successive parents until every row has run out."""
    chain = [start]
    while True:
        parent = _group(chain[-1], pattern)
        if not pc.any(pc.is_valid(parent)).as_py():
            return chain
        chain.append(parent)


def _token_matches(words: SortedSet, flat: pa.Array, rows: pa.Array, n: int) -> tuple[pa.Array, pa.Array]:
    """Per row of ``n``: how many distinct tokens are listed, and which (in URL order; null if none)."""
    hit = words.contains(flat)
    hits = pa.table({"row": rows.filter(hit), "word": flat.filter(hit)})
    per_row = hits.group_by("row", use_threads=False).aggregate([("word", "distinct")])
    slot = np.full(n, -1, np.int64)
    slot[per_row["row"].to_numpy()] = np.arange(per_row.num_rows)
    found = per_row["word_distinct"].combine_chunks().take(pa.array(slot, mask=slot < 0))
    return pc.fill_null(pc.cast(pc.list_value_length(found), pa.float64()), 0.0), found


@register
class UrlFilter(DocumentStage):
    """Adds ``url_filter_matched`` (the entry that removed the row); removes blocklisted and banned URLs."""

    name = "url_filter"
    reads = ("url",)
    Params = UrlFilterParams

    def setup(self) -> None:
        p = self.params
        files = [*p.blocklist_files, *([datatrove_blocklist_path()] if p.datatrove_blocklist else [])]
        domains = [normalise_hosts(pa.array(p.block_domains, pa.string()))]
        urls = [url_parts(pa.array(p.block_urls, pa.string()))[1]]
        for path in files:
            file_domains, file_urls = read_blocklist(path, p.categories)
            domains += [normalise_hosts(d) for d in file_domains]
            urls += [url_parts(u)[1] for u in file_urls]
        self._domains = SortedSet(pa.concat_arrays(domains))
        self._urls = SortedSet(pa.concat_arrays(urls))

        def word_set(extra: list[str], builtin: str) -> SortedSet:
            lists = [pa.array(extra, pa.string()), *([builtin_words(builtin)] if p.builtin_word_lists else [])]
            return SortedSet(normalise_words(pa.concat_arrays(lists)))

        self._banned = word_set(p.banned_words, "url_banned_words.txt")
        self._soft = word_set(p.soft_banned_words, "url_soft_banned_words.txt")
        subwords = word_set(p.banned_subwords, "url_banned_subwords.txt").values.to_pylist()
        # Longest first: at one position RE2 reports the first alternative, so the most specific entry.
        # Normalised words are [a-z0-9]+, nothing to escape.
        self._subword_pattern = "|".join(sorted(subwords, key=len, reverse=True)) or None

    def process(self, batch: pa.Table) -> pa.Table:
        urls = batch["url"].combine_chunks().cast(pa.string())
        n = len(urls)
        host, key = url_parts(urls)
        lower = pc.ascii_lower(urls)

        rules: list[tuple[str, pa.Array, pa.Array, pa.Array, float]] = []  # reason, fired, entry, score, threshold

        count, entry = _first_match(self._domains, _ancestors(host, r"^[^.]*\.(?P<p>.+)$"))
        rules.append(("blocked_domain", pc.greater(count, 0), entry, count, 1.0))

        unqueried = pc.replace_substring_regex(key, r"\?.*", "")
        queried = pc.if_else(pc.equal(key, unqueried), _NULL, key)
        count, entry = _first_match(self._urls, [queried, *_ancestors(unqueried, r"^(?P<p>.*)/[^/]*$")])
        rules.append(("blocked_url", pc.greater(count, 0), entry, count, 1.0))

        tokens = pc.split_pattern_regex(lower, _SEPARATORS)
        flat, rows = pc.list_flatten(tokens), pc.list_parent_indices(tokens)
        count, words = _token_matches(self._banned, flat, rows, n)
        rules.append(("banned_word", pc.greater(count, 0), pc.list_element(words, 0), count, 1.0))
        threshold = float(self.params.soft_word_threshold)
        count, words = _token_matches(self._soft, flat, rows, n)
        soft = pc.greater_equal(count, threshold)
        rules.append(("soft_banned_words", soft, pc.binary_join(words, " "), count, threshold))  # the set fires

        if self._subword_pattern is not None:
            squeezed = pc.replace_substring_regex(lower, _SEPARATORS, "")
            count = pc.fill_null(pc.cast(pc.count_substring_regex(squeezed, self._subword_pattern), pa.float64()), 0.0)
            entry = _group(squeezed, f"(?P<p>{self._subword_pattern})")
            rules.append(("banned_subword", pc.greater(count, 0), entry, count, 1.0))

        matched = pa.nulls(n, pa.string())
        for _, fired, entry, _, _ in rules:
            matched = pc.coalesce(matched, pc.if_else(fired, entry, _NULL))
        batch = set_column(batch, "url_filter_matched", matched)
        for reason, fired, _, score, threshold in rules:  # the first rule that fires keeps the row's reason
            batch = self.remove(batch, fired, reason, score, threshold)
        return batch

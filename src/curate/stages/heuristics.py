"""Heuristic quality filters: Gopher quality and repetition, C4 and FineWeb.

Each stage reproduces the decisions of the datatrove 0.10 filter of the same name (same rules, same order,
same short reasons), so an audit can be compared with peers that ran datatrove. Two deliberate differences:
every signal is measured for every document (datatrove stops at the first failing rule), and ``None``
disables a rule (datatrove also treats ``0`` as "disabled"; here ``0`` is a real limit).

Word splitting dominates datatrove's cost (spaCy ``blank("en")``, under 100 documents/s on web pages).
:class:`EnglishWords` re-implements spaCy's English tokenizer rules on plain :mod:`re`; a per-process
:class:`TokenVocabulary` splits each distinct whitespace chunk once for all four stages, and everything
else (lines, paragraphs, their duplicates, n-gram statistics, C4's line rules and sentence counts) is
computed batch-wide with Arrow kernels and numpy, whose string semantics the tests hold to Python's.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, Resources, StageParams

# --- datatrove's character tables (datatrove/utils/text.py) -------------------------------------------------

#: ``TERMINAL_PUNCTUATION``: FineWeb's "line ends with punctuation" characters (all single code points).
TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9"
    "\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049"
    "\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9"
    "\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047"
    "\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6"
    "\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c"
    "\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0"
    "\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c"
    "\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44"
    "\U00016e98\U0001bc9f\U0001da88"
)
#: ``PUNCTUATION_SET``: a Gopher "word" made only of these is a symbol, not a word.
PUNCTUATION_SET = TERMINAL_PUNCTUATION | frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, chain(range(9), range(11, 13), range(13, 32), range(127, 160))))
)

# --- spaCy 3.8 English tokenizer tables (spacy/lang/char_classes.py, spacy/lang/*/tokenizer_exceptions.py) ----

_PUNCT = r"… …… , : ; \! \? ¿ ؟ ¡ \( \) \[ \] \{ \} < > _ # \* & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪"
_QUOTES = r"""\' " ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 〈 〉 ⟦ ⟧"""
_HYPHENS = "- – — -- --- —— ~"
_CURRENCY = r"\$ £ € ¥ ฿ US\$ C\$ A\$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ € ₭ ₮ ₯ ₰ ₱ ₲ ₳ ₴ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₽ ₾ ₿"
# "тбكم" is glued in spaCy's own table; kept so the unit suffixes match.
_UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh mph "
    "hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм кг г "
    "мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم "
    "غرام جرام جم كغ ملغ كوب اكواب"
)
_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-; :( :-( :((
:-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p :-p :O :-O :o :-o :0
:-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.>
<.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333
</3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>
"""
_SINGLE_TOKEN_EXCEPTIONS = r"""
' \") <space> '' C++ ä. ö. ü. \t \n — 'd a.m. p.m. e.g. E.g. E.G. i.e. I.e. I.E. vs. v.s. co. Co. Corp. D.C. Dr.
Adm. Bros. Gen. Gov. Inc. Jr. Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. Mt. Ak. Ala.
Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans. Ky. La.
Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept.
Tenn. Va. Wash. Wis. 'S 's ‘S ‘s 're and/or w/o 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am
o'clock O'clock em 'em ll 'll nuff 'nuff
"""
#: Words that spaCy keeps whole with and without a trailing apostrophe ("goin", "goin'"), lower and title case.
_DROPPED_G = "lovin havin doin goin nothin nuthin ol somethin"
#: Verbs spaCy splits before "n't"/"nt" (with or without a following "'ve"); "ca", "sha", "wo" as in "can't".
_NEGATABLE_VERBS = "ca could do does did had may might must need ought sha should wo would"
#: Contractions spaCy lists but then removes because they are also words ("ill", "its", "well", …).
_NOT_CONTRACTIONS = "Ill ill Its its Hell hell Shell shell Shed shed were Were Well well Whore whore"
#: Characters on which spaCy's sentencizer ends a sentence: ``TERMINAL_PUNCTUATION`` minus these.
_NOT_SENTENCE_END = (
    "\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54\U00010f55"
    "\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011944\U00011946"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98"
)
SENTENCE_END = TERMINAL_PUNCTUATION - frozenset(_NOT_SENTENCE_END)


def spacy_english_exceptions() -> dict[str, tuple[str, ...]]:
    """spaCy's English tokenizer exceptions (chunk → its tokens), rebuilt from the rules that generate them.

    Whitespace-only exceptions are omitted: whitespace never reaches a chunk here.
    """
    exc: dict[str, tuple[str, ...]] = {}

    def add(*parts: str) -> None:
        exc["".join(parts)] = parts

    def cased(*words: str) -> list[str]:
        return [form for word in words for form in (word, word.title())]

    for orth in _EMOTICONS.split() + _SINGLE_TOKEN_EXCEPTIONS.split() + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]:
        add(orth)
    for orth in cased(*_DROPPED_G.split()):
        add(orth)
        add(orth + "'")
    for unit in "cfkCFK":
        add("°", unit, ".")
    for orth in cased("i"):
        for parts in (("'m",), ("m",), ("'m", "a"), ("m", "a")):
            add(orth, *parts)
    for orth in cased("i", "you", "he", "she", "it", "we", "they"):
        for parts in (("'ll",), ("ll",), ("'ll", "'ve"), ("ll", "ve"), ("'d",), ("d",), ("'d", "'ve"), ("d", "ve")):
            add(orth, *parts)
    for orth in cased("i", "you", "we", "they"):
        add(orth, "'ve")
        add(orth, "ve")
    for orth in cased("you", "we", "they"):
        add(orth, "'re")
        add(orth, "re")
    for orth in cased("he", "she", "it"):
        add(orth, "'s")
        add(orth, "s")
    for word in ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"):
        for orth in cased(word):
            if word not in ("these", "those"):
                add(orth, "'s")
                add(orth, "s")
            if word not in ("that", "this"):
                for parts in (("'re",), ("re",), ("'ve",), ("ve",)):
                    add(orth, *parts)
            for parts in (("'ll",), ("ll",), ("'ll", "'ve"), ("ll", "ve"), ("'d",), ("d",), ("'d", "'ve"), ("d", "ve")):
                add(orth, *parts)
    for orth in cased(*_NEGATABLE_VERBS.split()):
        for parts in (("n't",), ("nt",), ("n't", "'ve"), ("nt", "ve")):
            add(orth, *parts)
    for orth in cased("could", "might", "must", "should", "would"):
        add(orth, "'ve")
        add(orth, "ve")
    for orth in cased("ai", "are", "is", "was", "were", "have", "has", "dare"):
        add(orth, "n't")
        add(orth, "nt")
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            add(str(hour), period)
    for parts in (("y'", "all"), ("y", "all"), ("how", "'d", "'y"), ("How", "'d", "'y"), ("not", "'ve"),
                  ("not", "ve"), ("Not", "'ve"), ("Not", "ve"), ("can", "not"), ("Can", "not"), ("gon", "na"),
                  ("Gon", "na"), ("got", "ta"), ("Got", "ta"), ("let", "'s"), ("Let", "'s"), ("c'm", "on"),
                  ("C'm", "on")):  # fmt: skip
        add(*parts)
    for orth in _NOT_CONTRACTIONS.split():
        exc.pop(orth, None)
    for orth, parts in list(exc.items()):  # spaCy's expand_exc: every "'" rule also holds for "’"
        if "'" in orth:
            exc[orth.replace("'", "’")] = tuple(p.replace("'", "’") for p in parts)
    return exc


_URL = (  # spaCy's URL_PATTERN (after dperini's regex); "{lower}" is ALPHA_LOWER
    r"^(?:(?:[\w\+\-\.]{{2,}})://)?(?:\S+(?::\S*)?@)?(?:(?!(?:10|127)(?:\.\d{{1,3}}){{3}})"
    r"(?!(?:169\.254|192\.168)(?:\.\d{{1,3}}){{2}})(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{{1,3}}){{2}})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{{1,2}}|2[0-4]\d|25[0-5])){{2}}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))|(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{{0,62}})?"
    r"[A-Za-z0-9\u00a1-\uffff]\.)+(?:[{lower}]{{2,63}}))(?::\d{{2,5}})?(?:[/?#]\S*)?$"
)


def _class(mask: np.ndarray) -> str:
    """Regex character-class body for the code points where ``mask`` holds."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False]))).astype(bool))
    return "".join(
        f"\\U{a:08x}" if a == b - 1 else f"\\U{a:08x}-\\U{b - 1:08x}"
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    )


@functools.cache
def _letter_classes() -> tuple[str, str, str, str]:
    """(ALPHA, ALPHA_LOWER, ALPHA_UPPER, other symbols) as regex class bodies.

    spaCy hand-lists these per script; Unicode properties give the same sets for the scripts that matter
    here (Latin, Greek, Cyrillic, CJK). Caseless letters count as both lower and upper, as in spaCy. Planes
    4–16 hold no letters or symbols. Built once per process (~0.1 s).
    """
    code_points = np.arange(0x40000, dtype=np.uint32)
    code_points[0xD800:0xE000] = 0  # surrogates cannot be decoded; NUL is neither a letter nor a symbol
    chars = code_points.tobytes().decode("utf-32-le")
    n = len(chars)
    alpha = np.fromiter(map(str.isalpha, chars), bool, n)
    lower = np.fromiter(map(str.islower, chars), bool, n)
    upper = np.fromiter(map(str.isupper, chars), bool, n)
    caseless = alpha & ~lower & ~upper & ~np.fromiter(map(str.istitle, chars), bool, n)
    symbol = np.fromiter(map(unicodedata.category, chars), "<U2", n) == "So"
    return _class(alpha), _class(lower | caseless), _class(upper | caseless), _class(symbol)


#: Most chunks the word splitter's memo keeps; the filters' :class:`TokenVocabulary` keeps twice as many
#: (its rows are arrays, not tuples: ~230 bytes a distinct chunk for both, tracemalloc on 166 k real chunks,
#: so ~60-90 MB at these bounds, about what the five per-stage memos before it held). The kept documents of
#: the 20k-response benchmark corpus bring ~60 new chunks a document (344 k distinct in 9.5 k documents, 120 k
#: in a batch of 512). With the vocabulary, its bound hardly matters: 2^17 to unbounded were within the noise
#: of the four stages' time there (24-27 s), where it was 15-25 % of the per-chunk memos' time. A full memo
#: is cleared, not trimmed least recently used: ``functools.lru_cache`` makes every hit slower (316 against
#: 239 ns a chunk), and two generations of 2^17 were no faster than this.
MEMO_ENTRIES = 1 << 17


class _Memo(dict):
    """``memo[chunk]`` is ``compute(chunk)``, computed on first sight, for at most ``limit`` chunks.

    Web text is Zipfian: a few thousand documents in, most whitespace-delimited chunks have been seen, so
    per-chunk work (word splitting, character classes) runs once and ``map(memo.__getitem__, …)`` turns a
    document into C-speed lookups. A full memo starts over (:data:`MEMO_ENTRIES`): the frequent chunks
    come back within a few documents, and a hit stays a plain dict lookup.
    """

    def __init__(self, compute: Callable[[str], object], limit: int | None) -> None:
        super().__init__()
        self._compute = compute
        self._limit = limit

    def __missing__(self, chunk: str) -> object:
        if self._limit is not None and len(self) >= self._limit:
            self.clear()
        value = self[sys.intern(chunk)] = self._compute(chunk)  # one copy of the key for every memo
        return value


class EnglishWords:
    """spaCy ``blank("en")`` word splitting, the tokenizer datatrove's English filters use, without spaCy.

    The algorithm is ``spacy.tokenizer.Tokenizer``'s: split on whitespace; peel prefixes and suffixes off
    each chunk until a special case (contraction, abbreviation, emoticon) or nothing is left; keep URLs
    whole; split the rest at infixes; finally merge token runs that spell a special case. Rule tables are
    spaCy 3.8's English ones, so tokens agree with spaCy on real text (1,609,317 tokens of 2,134 documents:
    one document differs, see the tests); memoised per chunk, it runs 20x (cold) to 60x (warm) faster than
    datatrove's ``split_into_words``.
    """

    def __init__(self) -> None:
        alpha, lower, upper, symbols = _letter_classes()
        # A class with astral ranges is slow to *fail* (re scans those ranges one by one), so every use of a
        # large class is guarded by a cheap lookahead on the characters that can match at that point.
        punct, quotes, ellipses = _PUNCT.split(), _QUOTES.split(), [r"\.\.+", "…"]
        icon = rf"(?=[^\x00-\x7f])[{symbols}]"
        quote_chars = "".join(quotes)
        prefixes = ["§", "%", "=", "—", "–", r"\+(?![0-9])", *punct, *ellipses, *quotes, *_CURRENCY.split(), icon]
        infixes = [
            *ellipses,
            icon,
            r"(?<=[0-9])[+\-\*^](?=[0-9-])",
            rf"(?=\.)(?<=[{lower}{quote_chars}])\.(?=[{upper}{quote_chars}])",
            rf"(?=,)(?<=[{alpha}]),(?=[{alpha}])",
            rf"(?=[-–—~])(?<=[{alpha}0-9])(?:{'|'.join(_HYPHENS.split())})(?=[{alpha}])",
            rf"(?=[:<>=/])(?<=[{alpha}0-9])[:<>=/](?=[{alpha}])",
        ]
        self._prefix = re.compile("|".join("^" + p for p in prefixes)).match
        self._infix = re.compile("|".join(infixes)).finditer
        self._may_have_infix = re.compile(rf"[.…+\-*^,–—~:<>=/]|{icon}").search
        self._url = re.compile("(?u)" + _URL.format(lower=lower)).match
        # Suffixes: spaCy's regex is an alternation of ~100 "$"-anchored pieces; they all end at the end,
        # so the leftmost match is the longest one, which _suffix_length finds with a few set lookups.
        self._suffix_chars = frozenset(c for p in [*punct, *quotes, "—", "–"] if len(c := p.removeprefix("\\")) == 1)
        self._symbol = re.compile(f"[{symbols}]").match
        self._upper = re.compile(f"[{upper}]").match
        # The class spaCy builds for "period after ..." literally includes "|", "(", "?", ":" from its syntax.
        self._before_period = re.compile(rf"[0-9{lower}%²\-\+{'|'.join(punct)}(?:{quote_chars})]").match
        units = _CURRENCY.split() + _UNITS.split()
        self._unit_suffix = re.compile(rf"(?<=[0-9])(?:{'|'.join(units)})$").search
        self._unit_last_chars = frozenset(u[-1] for u in units)
        self.exceptions = spacy_english_exceptions()
        self._patterns: dict[tuple[str, ...], str] = {}
        for orth in self.exceptions:  # spaCy's special-case matcher: exceptions that contain affixes
            pieces = self._split(orth, {})
            if len(pieces) > 1:
                self._patterns[pieces] = orth
        self._pattern_sizes: dict[str, list[int]] = {}
        for pieces in self._patterns:
            self._pattern_sizes.setdefault(pieces[0], []).append(len(pieces))
        self._memo = _Memo(self._tokenize, MEMO_ENTRIES)

    def words(self, text: str) -> list[str]:
        """Tokens of ``text`` without whitespace tokens: datatrove's ``split_into_words(text, "en")``."""
        return list(chain.from_iterable(map(self._memo.__getitem__, text.split())))

    def split(self, chunk: str) -> tuple[str, ...]:
        """Tokens of one whitespace-free chunk (memoised)."""
        return self._memo[chunk]

    def _tokenize(self, chunk: str) -> tuple[str, ...]:
        tokens = self._split(chunk, self.exceptions)
        if len(tokens) > 1 and not self._pattern_sizes.keys().isdisjoint(tokens):
            tokens = self._merge_exceptions(tokens)
        return tokens

    def _split(self, string: str, exceptions: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        """spaCy's ``_split_affixes`` then ``_attach_tokens``; with no exceptions, what its matcher patterns are."""
        if string.isalpha():  # no affix or infix rule can match letters only
            return exceptions.get(string) or (string,)
        prefixes: list[str] = []
        suffixes: list[str] = []
        last = -1
        while string and len(string) != last and string not in exceptions and not string.isalpha():
            last = len(string)
            match = self._prefix(string)
            pre = match.end() if match else 0
            if pre and string[pre:] in exceptions:
                prefixes.append(string[:pre])
                string = string[pre:]
                break
            suf = self._suffix_length(string[pre:]) if len(string) > pre else 0
            if suf and string[:-suf] in exceptions:
                suffixes.append(string[-suf:])
                string = string[:-suf]
                break
            if pre and suf and pre + suf <= len(string):
                prefixes.append(string[:pre])
                suffixes.append(string[-suf:])
                string = string[pre:-suf]
            elif pre:
                prefixes.append(string[:pre])
                string = string[pre:]
            elif suf:
                suffixes.append(string[-suf:])
                string = string[:-suf]
        tokens = prefixes
        if string in exceptions:
            tokens += exceptions[string]
        elif string and (("." in string and self._url(string)) or not self._may_have_infix(string)):
            tokens.append(string)
        elif string:
            start = 0
            for match in self._infix(string):
                a, b = match.span()
                if a == 0:
                    continue
                if a != start:
                    tokens.append(string[start:a])
                if a != b:
                    tokens.append(string[a:b])
                start = b
            if start < len(string):
                tokens.append(string[start:])
        tokens += reversed(suffixes)
        return tuple(tokens)

    def _suffix_length(self, s: str) -> int:
        """Length of the suffix spaCy's English rules split off the end of ``s`` (0 if none)."""
        n, last = len(s), s[-1]
        length = 1 if last in self._suffix_chars or (last > "\x7f" and self._symbol(last)) else 0
        if last == "…":
            length = 2 if n > 1 and s[-2] == "…" else 1
        elif last == "." and n > 1:
            before = s[-2]
            if before == ".":
                length = n - len(s.rstrip("."))
            elif self._before_period(before) or (
                n > 2 and ((self._upper(before) and self._upper(s[-3])) or (s[-3] == "°" and before in "FfCcKk"))
            ):
                length = 1
        elif last in "sS" and n > 1 and s[-2] in "'’":
            length = 2
        elif last == "+" and n > 1 and s[-2] in "0123456789":
            length = 1
        if last in self._unit_last_chars:
            match = self._unit_suffix(s, max(0, n - 7))
            if match:
                length = max(length, match.end() - match.start())
        return length

    def _merge_exceptions(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        """spaCy's ``_apply_special_cases``: longest (then leftmost) runs first, no overlaps."""
        spans = [
            (i, i + size)
            for i, token in enumerate(tokens)
            for size in self._pattern_sizes.get(token, ())
            if tokens[i : i + size] in self._patterns
        ]
        if not spans:
            return tokens
        spans.sort(key=lambda s: (s[0] - s[1], s[0]))
        seen: set[int] = set()
        keep = []
        for i, j in spans:
            if i not in seen and j - 1 not in seen:
                keep.append((i, j))
            seen.update(range(i, j))
        out: list[str] = []
        pos = 0
        for i, j in sorted(keep):
            out += tokens[pos:i]
            out += self.exceptions["".join(tokens[i:j])]
            pos = j
        out += tokens[pos:]
        return tuple(out)


@functools.cache
def english_words() -> EnglishWords:
    """One splitter per process, shared by the stages: splitting is pure, so a chunk is split once for all."""
    return EnglishWords()


# --- shared machinery --------------------------------------------------------------------------------------

def _re2_class(chars: Iterable[str]) -> str:
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


#: Python's whitespace (``str.isspace``; the highest is U+3000) as RE2 classes: RE2's ``\\s`` is ASCII only.
_WHITESPACE = [c for c in map(chr, range(0x3001)) if c.isspace()]
_SPACE = _re2_class(_WHITESPACE)
_SPACE_NOT_NEWLINE = _re2_class(c for c in _WHITESPACE if c != "\n")  # Python's [^\S\n]
_SPACE_NOT_SPACE = _re2_class(c for c in _WHITESPACE if c != " ")
#: ``str.splitlines`` boundaries ("\r\n" first: it is one boundary).
_LINE_BOUNDARY = "\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"


def _text_array(batch: pa.Table) -> pa.Array:
    return batch.column("text").combine_chunks().fill_null("")


def _keys(batch: pa.Table) -> pa.Array:
    return batch.column("id").combine_chunks()


def _pieces(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list array's values and, for each, the index of its row."""
    return lists.flatten(), pc.list_parent_indices(lists).to_numpy().astype(np.int64)


def whitespace_chunks(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each text's ``str.split()``, flat: the chunks and each one's row.

    Arrow's whitespace is Python's (general category Zs or bidirectional class WS, B or S: the tests compare
    every code point); it only differs in leaving empty strings at the ends, which are dropped here.
    """
    chunks, rows = _pieces(pc.utf8_split_whitespace(texts))
    nonempty = pc.greater(pc.binary_length(chunks), 0)
    return chunks.filter(nonempty), rows[nonempty.to_numpy(zero_copy_only=False)]


def split_lines(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each text's ``str.splitlines()``, flat: the lines and each one's row."""
    lines, rows = _pieces(pc.split_pattern_regex(texts, _LINE_BOUNDARY))
    # A regex split leaves one empty piece after a final boundary (and is [""] for ""); splitlines does not.
    last = np.zeros(len(lines), bool)
    ends = np.flatnonzero(np.diff(rows, append=len(texts))) if len(rows) else np.zeros(0, np.int64)
    last[ends] = True
    keep = ~(last & (pc.binary_length(lines).to_numpy() == 0))
    return lines.filter(pa.array(keep)), rows[keep]


def duplicate_pieces(pieces: pa.Array, rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its pieces, how many repeat an earlier piece of the row and their characters.

    datatrove's ``find_duplicates`` (first occurrences excluded) batch-wide: pieces are dictionary-encoded
    once, and a row's distinct pieces are the distinct (row, code) pairs.
    """
    lengths = pc.utf8_length(pieces).to_numpy(zero_copy_only=False).astype(np.float64)
    encoded = pc.dictionary_encode(pieces)
    key = rows * max(len(encoded.dictionary), 1) + encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(key, return_index=True)
    total = np.bincount(rows, minlength=n_rows)
    distinct = np.bincount(rows[first], minlength=n_rows)
    chars = np.bincount(rows, lengths, minlength=n_rows) - np.bincount(rows[first], lengths[first], minlength=n_rows)
    return total.astype(np.float64), (total - distinct).astype(np.float64), chars


_W, _P, _E = 0, 1, 2  # spaCy sentencizer classes of a token


def _sentence_class(token: str) -> int:
    if token in SENTENCE_END:
        return _E
    return _P if all(unicodedata.category(c)[0] == "P" for c in token) else _W


@dataclass(frozen=True)
class BatchTokens:
    """The spaCy tokens of a batch of documents, concatenated: what the heuristic filters reduce per document.

    ``ids`` index the per-token tables, which are snapshots: they stay valid whatever the vocabulary does
    next. ``token_ids`` is the vocabulary's live map (ids it gives past the tables are tokens added later).
    """

    ids: np.ndarray  # int64, every document's tokens in order
    counts: np.ndarray  # tokens per document
    length: np.ndarray  # per token id: characters
    has_letter: np.ndarray  # per token id: contains an alphabetic character
    symbol: np.ndarray  # per token id: only PUNCTUATION_SET characters (not a Gopher "word")
    sentence_class: np.ndarray  # per token id: _E ends a sentence, _P other punctuation, _W anything else
    token_ids: dict[str, int]

    def per_document(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """``ufunc`` reduced over each document's tokens of per-token ``values``."""
        return _segment_reduce(ufunc, values, self.counts)

    def select(self, rows: np.ndarray) -> BatchTokens:
        """The tokens of these documents, in this order."""
        counts = self.counts[rows]
        shift = (np.cumsum(self.counts) - self.counts)[rows] - (np.cumsum(counts) - counts)
        return replace(self, ids=self.ids[np.arange(int(counts.sum())) + np.repeat(shift, counts)], counts=counts)


class TokenVocabulary:
    """Whitespace chunks → spaCy tokens for whole batches: one per process, shared by the filters.

    Arrow splits a batch at whitespace and dictionary-encodes the chunks in C++, so Python touches each
    *distinct* chunk of a batch once (a seventh of all chunks on the benchmark corpus) and only splits the
    ones it has not seen (:class:`EnglishWords`); every occurrence's tokens are then gathered with numpy.
    Chunk and token ids live until the vocabulary holds more than ``limit`` chunks or tokens; it then starts
    over at the next batch, so it holds at most ``limit`` plus one batch's distinct chunks.

    Consecutive stages mostly see the same texts (each without the rows the one before removed), so the
    last call's tokens are kept with its texts and row keys: a call whose every text is one of those, under
    the same key, takes its tokens from there.
    """

    def __init__(self, words: EnglishWords, limit: int) -> None:
        self._words, self._limit = words, limit
        self._reset()

    def _reset(self) -> None:
        self._chunks: dict[str, int] = {}
        self._starts, self._counts, self._flat = array("q"), array("q"), array("q")  # chunk → its tokens
        self._tokens: dict[str, int] = {}
        self._lengths, self._letter, self._symbol, self._class = array("q"), array("b"), array("b"), array("b")
        self._last: tuple[pa.Array, pa.Array, BatchTokens] | None = None  # keys, texts, tokens of the last call

    def __len__(self) -> int:
        return len(self._chunks)

    def _add(self, chunks: list[str]) -> None:
        """Split new chunks and append them (and their new tokens) to the tables, in bulk."""
        split = list(map(self._words.split, chunks))
        counts = list(map(len, split))
        self._starts.extend(np.cumsum([len(self._flat), *counts[:-1]]).tolist())
        self._counts.extend(counts)
        tokens = list(chain.from_iterable(split))
        ids = self._tokens
        new = [t for t in dict.fromkeys(tokens) if t not in ids]
        ids.update(zip(new, range(len(ids), len(ids) + len(new))))
        self._lengths.extend(map(len, new))
        self._letter.extend(any(map(str.isalpha, t)) for t in new)
        self._symbol.extend(map(PUNCTUATION_SET.issuperset, new))
        self._class.extend(map(_sentence_class, new))
        self._flat.extend(map(ids.__getitem__, tokens))
        self._chunks.update(zip(chunks, range(len(self._chunks), len(self._chunks) + len(chunks))))

    def _reuse(self, texts: pa.Array, keys: pa.Array) -> BatchTokens | None:
        if self._last is None or not len(texts):
            return None
        last_keys, last_texts, last = self._last
        rows = pc.index_in(keys, value_set=last_keys)
        if rows.null_count or not pc.all(pc.equal(texts, last_texts.take(rows))).as_py():
            return None
        return last.select(rows.to_numpy())

    def tokens(self, texts: pa.Array, keys: pa.Array | None = None) -> BatchTokens:
        """The tokens of every text (``texts`` without nulls): datatrove's ``split_into_words`` for each.

        ``keys`` (the documents' ids) let the call reuse the tokens of the last call that had keys, and
        remember its own.
        """
        if keys is not None and (reused := self._reuse(texts, keys)) is not None:
            return reused
        if len(self._chunks) > self._limit or len(self._tokens) > self._limit:
            self._reset()
        chunks, rows = whitespace_chunks(texts)
        encoded = pc.dictionary_encode(chunks)
        known, strings = self._chunks.get, encoded.dictionary.to_pylist()
        distinct = [known(c) for c in strings]
        if None in distinct:
            first_new = len(self._chunks)
            self._add([c for c, i in zip(strings, distinct, strict=True) if i is None])
            new_ids = iter(range(first_new, len(self._chunks)))  # _add numbers the new chunks in this order
            distinct = [next(new_ids) if i is None else i for i in distinct]
        occurrences = np.asarray(distinct, np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]
        counts = np.frombuffer(self._counts, np.int64)[occurrences]
        # An occurrence's tokens are consecutive in the flat table, from its chunk's start.
        shift = np.frombuffer(self._starts, np.int64)[occurrences] - (np.cumsum(counts) - counts)
        positions = np.arange(int(counts.sum())) + np.repeat(shift, counts)
        tokens = BatchTokens(
            ids=np.frombuffer(self._flat, np.int64)[positions],
            counts=np.bincount(rows, counts, minlength=len(texts)).astype(np.int64),
            length=np.array(self._lengths, np.int64),
            has_letter=np.array(self._letter, bool),
            symbol=np.array(self._symbol, bool),
            sentence_class=np.array(self._class, np.int8),
            token_ids=self._tokens,
        )
        if keys is not None:
            self._last = (keys, texts, tokens)
        return tokens


@functools.cache
def token_vocabulary() -> TokenVocabulary:
    """One vocabulary per process, shared by the stages, on the shared word splitter."""
    return TokenVocabulary(english_words(), 2 * MEMO_ENTRIES)


def _segment_reduce(ufunc: np.ufunc, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``ufunc`` reduced over consecutive segments of ``values`` of the given lengths (0 for empty ones)."""
    out = np.zeros((len(counts), *values.shape[1:]), values.dtype)
    nonempty = counts > 0
    if nonempty.any():
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out[nonempty] = ufunc.reduceat(values, starts[nonempty], axis=0)
    return out


def _count(texts: pa.Array, pattern: str) -> np.ndarray:
    """Non-overlapping occurrences of ``pattern`` in each text (``str.count``)."""
    return pc.count_substring(texts, pattern).to_numpy().astype(np.float64)


def _matches(strings: pa.Array, regex: str) -> np.ndarray:
    """1.0 where the RE2 ``regex`` matches in a string, else 0.0 (per-row weights for ``np.bincount``)."""
    return pc.match_substring_regex(strings, regex).to_numpy(zero_copy_only=False).astype(np.float64)


def _ends_with_any(strings: pa.Array, suffixes: Sequence[str]) -> np.ndarray:
    """1.0 where a string ends with one of ``suffixes`` (``str.endswith(tuple)``), else 0.0."""
    if "" in suffixes:
        return np.ones(len(strings))
    hit = np.zeros(len(strings), bool)
    for size in sorted({len(s) for s in suffixes}):
        tails = pc.utf8_slice_codeunits(strings, start=-size)
        of_size = pa.array([s for s in suffixes if len(s) == size])
        hit |= pc.is_in(tails, value_set=of_size).to_numpy(zero_copy_only=False)
    return hit.astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio, NaN (stored as null, never failing a rule) where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


@dataclass(frozen=True)
class _Rule:
    """One datatrove check: fails where ``values`` is below ``limit`` ("min"), above it ("max") or true ("flag")."""

    reason: str
    values: np.ndarray
    limit: float | None = None
    kind: Literal["min", "max", "flag"] = "flag"


class _HeuristicFilter(DocumentStage):
    """Writes the signal columns, then removes each row at its first failing rule (datatrove's order)."""

    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def _finish(self, batch: pa.Table, signals: dict[str, np.ndarray], rules: Sequence[_Rule]) -> pa.Table:
        for name, values in signals.items():
            mask = np.isnan(values) if values.dtype.kind == "f" else None
            batch = set_column(batch, f"{self.name}_{name}", pa.array(values, mask=mask))
        n = batch.num_rows
        failed = np.zeros(n, bool)
        reasons = np.full(n, None, object)
        scores = np.full(n, np.nan)
        thresholds = np.full(n, np.nan)
        for rule in rules:
            if rule.kind == "flag":
                hit = rule.values.astype(bool)
            elif rule.limit is None:
                continue
            elif rule.kind == "min":
                hit = rule.values < rule.limit
            else:
                hit = rule.values > rule.limit
            hit &= ~failed
            failed |= hit
            reasons[hit] = rule.reason
            if rule.kind != "flag":
                scores[hit] = rule.values[hit]
                thresholds[hit] = rule.limit
        if not failed.any():
            return batch
        return self.remove(
            batch,
            pa.array(failed),
            pa.array(reasons, pa.string()),
            pa.array(scores, mask=np.isnan(scores)),
            pa.array(thresholds, mask=np.isnan(thresholds)),
        )


def _fraction(description: str, default: float | None) -> float | None:
    return Field(default, ge=0, description=description)


# --- Gopher quality -----------------------------------------------------------------------------------------

_BULLET_LINE = f"^{_SPACE_NOT_NEWLINE}*[•-]"
_ELLIPSIS_LINE = f"(?:\\.\\.\\.|…){_SPACE_NOT_NEWLINE}*$"


@register
class GopherQuality(_HeuristicFilter):
    """Gopher's quality rules (Rae et al. 2021, arXiv:2112.11446, appendix A.1.1) as datatrove's
    ``GopherQualityFilter`` applies them: prose has a normal length, words of normal length, few symbols,
    bullets or trailing ellipses, mostly alphabetic words, and uses common English function words.

    "Words" are spaCy tokens (punctuation included) and the word count excludes pure-symbol tokens, both as
    in datatrove; ratios are per token.
    """

    name = "gopher_quality"

    class Params(StageParams):
        min_doc_words: int | None = Field(50, description="Gopher: at least 50 words (non-symbol tokens)")
        max_doc_words: int | None = Field(100_000, description="Gopher: at most 100,000 words")
        min_avg_word_length: float | None = Field(3, description="Gopher: mean word length at least 3 characters")
        max_avg_word_length: float | None = Field(10, description="Gopher: mean word length at most 10 characters")
        max_symbol_word_ratio: float | None = _fraction("Gopher: '#' and (separately) '...'/'…' per token ≤ 0.1", 0.1)
        max_bullet_lines_ratio: float | None = _fraction("Gopher: ≤ 90% of lines start with a bullet (•, -)", 0.9)
        max_ellipsis_lines_ratio: float | None = _fraction("Gopher: ≤ 30% of lines end with an ellipsis", 0.3)
        min_alpha_words_ratio: float | None = _fraction(
            "Gopher: ≥ 80% of tokens contain a letter (datatrove: max_non_alpha_words_ratio)", 0.8
        )
        min_stop_words: int | None = Field(2, description="Gopher: at least 2 distinct stop words")
        stop_words: tuple[str, ...] = Field(
            ("the", "be", "to", "of", "and", "that", "have", "with"), description="Gopher's stop words (case-sensitive)"
        )

        @field_validator("stop_words")
        @classmethod
        def _fits_bitmask(cls, value: tuple[str, ...]) -> tuple[str, ...]:
            if len(set(value)) > 63:
                raise ValueError("at most 63 stop words (they are tracked as bits of an int64)")
            return value

    def setup(self) -> None:
        self._vocabulary = token_vocabulary()
        self._stop_bits = {word: 1 << i for i, word in enumerate(dict.fromkeys(self.params.stop_words))}

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        texts = _text_array(batch)
        n = len(texts)
        tokens = self._vocabulary.tokens(texts, _keys(batch))
        ids = tokens.ids
        word = ~tokens.symbol[ids]
        words = tokens.per_document(np.add, word.astype(np.int64))
        word_chars = tokens.per_document(np.add, np.where(word, tokens.length[ids], 0))
        alpha = tokens.per_document(np.add, tokens.has_letter[ids].astype(np.int64))
        bits = np.zeros(len(tokens.length), np.int64)
        for stop_word, bit in self._stop_bits.items():
            if (i := tokens.token_ids.get(stop_word, len(bits))) < len(bits):
                bits[i] = bit
        stop_words = np.bitwise_count(tokens.per_document(np.bitwise_or, bits[ids]))

        lines, rows = split_lines(texts)
        n_lines = np.bincount(rows, minlength=n)
        bullets = np.bincount(rows, _matches(lines, _BULLET_LINE), minlength=n)
        ellipsis_lines = np.bincount(rows, _matches(lines, _ELLIPSIS_LINE), minlength=n)
        hashes = _count(texts, "#")
        ellipses = _count(texts, "...") + _count(texts, "…")

        signals = {
            "word_count": words,
            "mean_word_length": _ratio(word_chars, words),
            "hash_ratio": _ratio(hashes, tokens.counts),
            "ellipsis_ratio": _ratio(ellipses, tokens.counts),
            "bullet_lines_ratio": _ratio(bullets, n_lines),
            "ellipsis_lines_ratio": _ratio(ellipsis_lines, n_lines),
            "alpha_words_ratio": _ratio(alpha, tokens.counts),
            "stop_words": stop_words.astype(np.int64),
        }
        s = signals
        rules = [
            _Rule("gopher_short_doc", s["word_count"], p.min_doc_words, "min"),
            _Rule("gopher_long_doc", s["word_count"], p.max_doc_words, "max"),
            _Rule("gopher_below_avg_threshold", s["mean_word_length"], p.min_avg_word_length, "min"),
            _Rule("gopher_above_avg_threshold", s["mean_word_length"], p.max_avg_word_length, "max"),
            _Rule("gopher_too_many_hashes", s["hash_ratio"], p.max_symbol_word_ratio, "max"),
            _Rule("gopher_too_many_ellipsis", s["ellipsis_ratio"], p.max_symbol_word_ratio, "max"),
            _Rule("gopher_too_many_bullets", s["bullet_lines_ratio"], p.max_bullet_lines_ratio, "max"),
            _Rule("gopher_too_many_end_ellipsis", s["ellipsis_lines_ratio"], p.max_ellipsis_lines_ratio, "max"),
            _Rule("gopher_below_alpha_threshold", s["alpha_words_ratio"], p.min_alpha_words_ratio, "min"),
            _Rule("gopher_enough_stop_words", s["stop_words"], p.min_stop_words, "min"),  # sic: datatrove's name
        ]
        return self._finish(batch, signals, rules)


# --- Gopher repetition --------------------------------------------------------------------------------------

_PARAGRAPH_BREAK = r"\n{2,}"
_LINE_BREAK = r"\n+"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0x100000001B3)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64: token ids to well-spread 64-bit values for polynomial n-gram hashes."""
    z = values.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def ngram_repetition(
    tokens: np.ndarray, lengths: np.ndarray, counts: np.ndarray, top: Sequence[int], dup: Sequence[int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Gopher's n-gram character counts for a batch of documents, as datatrove computes them.

    ``tokens`` are the concatenated token ids of all documents (``counts`` per document), ``lengths`` their
    character lengths. Returns, per document, for each ``n`` in ``top`` the characters of the most frequent
    n-gram times its count (``" ".join`` length; NaN when the document has fewer than ``n`` tokens), and for
    each ``n`` in ``dup`` the characters of duplicated n-grams found by datatrove's greedy left-to-right scan,
    which skips the ``n`` tokens of each duplicate it counts.

    N-grams are compared by a 64-bit polynomial hash of their token ids, scoped to the document, and counted
    with one ``np.unique`` per ``n`` over the whole batch. Only positions whose (n-1)-gram repeats can start
    a repeated n-gram, so each step keeps just those: the work shrinks quickly with ``n``.
    """
    n_docs = len(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    doc = np.repeat(np.arange(n_docs), counts)
    end = np.repeat(starts + counts, counts)
    chars = np.concatenate(([0], np.cumsum(lengths)))
    values = _mix(tokens)
    salt = _mix(np.arange(n_docs) + len(tokens))
    top_chars = {n: np.full(n_docs, np.nan) for n in top}
    dup_chars = {n: np.zeros(n_docs) for n in dup}
    position = np.arange(len(tokens))
    hashes = values.copy()
    first = min([*top, *dup], default=1)
    for n in range(1, max([*top, *dup], default=0) + 1):
        if n > 1:
            valid = position + n <= end[position]
            position, hashes = position[valid], hashes[valid] * _BASE + values[position[valid] + n - 1]
        if n < first:
            continue
        _, inverse, totals = np.unique(hashes ^ salt[doc[position]], return_inverse=True, return_counts=True)
        count = totals[inverse]
        repeated = count >= 2
        if n in top_chars:
            long_enough = counts >= n  # every n-gram unique: the first one is the "most common"
            top_chars[n][long_enough] = chars[starts[long_enough] + n] - chars[starts[long_enough]] + n - 1
            if repeated.any():
                where, how_often = position[repeated], count[repeated]
                most = np.zeros(n_docs, np.int64)
                np.maximum.at(most, doc[where], how_often)
                is_top = how_often == most[doc[where]]
                docs, at = np.unique(doc[where[is_top]], return_index=True)  # earliest, as Counter.most_common
                p = where[is_top][at]
                top_chars[n][docs] = (chars[p + n] - chars[p] + n - 1) * most[docs]
        if n in dup_chars and repeated.any():
            where = position[repeated]
            keys = (hashes[repeated] ^ salt[doc[where]]).tolist()
            sizes = (chars[where + n] - chars[where]).tolist()
            bounds = np.flatnonzero(np.diff(doc[where])) + 1
            for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(keys)], strict=True):
                dup_chars[n][doc[where[a]]] = _greedy_duplicates(where[a:b].tolist(), keys[a:b], sizes[a:b], n)
        position, hashes = position[repeated], hashes[repeated]
    return top_chars, dup_chars


def _greedy_duplicates(positions: list[int], keys: list[int], sizes: list[int], n: int) -> int:
    """datatrove's ``find_all_duplicate`` restricted to positions whose n-gram occurs more than once.

    The other positions never match later and only advance the scan by one, so skipping them is exact.
    """
    seen: set[int] = set()
    resume = 0
    total = 0
    for position, key, size in zip(positions, keys, sizes, strict=True):
        if position < resume:
            continue
        if key in seen:
            total += size
            resume = position + n
        else:
            seen.add(key)
    return total


@register
class GopherRepetition(_HeuristicFilter):
    """Gopher's repetition rules (Rae et al. 2021, arXiv:2112.11446, table A1) as datatrove's
    ``GopherRepetitionFilter`` applies them: a page whose lines, paragraphs or word n-grams repeat too much
    is boilerplate or spam. Character fractions are over ``len(text)``; n-grams are spaCy tokens.

    One intended difference: datatrove compares duplicate 5-10-grams by their *concatenation without
    spaces*, so two different token runs spelling the same string would match; here n-grams are token
    sequences (as for its top n-grams).
    """

    name = "gopher_repetition"

    class Params(StageParams):
        dup_line_frac: float | None = _fraction("Gopher: ≤ 30% of lines are duplicates", 0.3)
        dup_para_frac: float | None = _fraction("Gopher: ≤ 30% of paragraphs are duplicates", 0.3)
        dup_line_char_frac: float | None = _fraction("Gopher: ≤ 20% of characters in duplicate lines", 0.2)
        dup_para_char_frac: float | None = _fraction("Gopher: ≤ 20% of characters in duplicate paragraphs", 0.2)
        top_n_grams: tuple[tuple[int, float], ...] = Field(
            ((2, 0.2), (3, 0.18), (4, 0.16)),
            description="Gopher: (n, limit) on the character share of the most frequent n-gram",
        )
        dup_n_grams: tuple[tuple[int, float], ...] = Field(
            ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
            description="Gopher: (n, limit) on the character share of duplicated n-grams",
        )

        @field_validator("top_n_grams", "dup_n_grams")
        @classmethod
        def _positive_n(cls, value: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
            if any(n < 1 for n, _ in value) or len({n for n, _ in value}) != len(value):
                raise ValueError("n-gram sizes must be distinct and >= 1")
            return value

    def setup(self) -> None:
        self._vocabulary = token_vocabulary()

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        texts = _text_array(batch)
        n = len(texts)
        paragraphs = _pieces(pc.split_pattern_regex(pc.utf8_trim_whitespace(texts), _PARAGRAPH_BREAK))
        paras, dup_para, dup_para_chars = duplicate_pieces(*paragraphs, n)
        lines, dup_line, dup_line_chars = duplicate_pieces(*_pieces(pc.split_pattern_regex(texts, _LINE_BREAK)), n)
        tokens = self._vocabulary.tokens(texts, _keys(batch))
        top_n, dup_n = [k for k, _ in p.top_n_grams], [k for k, _ in p.dup_n_grams]
        top, dup = ngram_repetition(tokens.ids, tokens.length[tokens.ids], tokens.counts, top_n, dup_n)
        text_chars = pc.utf8_length(texts).to_numpy().astype(np.float64)

        signals = {
            "dup_para_frac": _ratio(dup_para, paras),
            "dup_para_char_frac": _ratio(dup_para_chars, text_chars),
            "dup_line_frac": _ratio(dup_line, lines),
            "dup_line_char_frac": _ratio(dup_line_chars, text_chars),
        }
        signals |= {f"top_{k}_gram_char_frac": _ratio(top[k], text_chars) for k, _ in p.top_n_grams}
        signals |= {f"dup_{k}_gram_char_frac": _ratio(dup[k], text_chars) for k, _ in p.dup_n_grams}
        s = signals
        rules = [
            _Rule("empty", text_chars == 0),
            _Rule("dup_para_frac", s["dup_para_frac"], p.dup_para_frac, "max"),
            _Rule("dup_para_char_frac", s["dup_para_char_frac"], p.dup_para_char_frac, "max"),
            _Rule("dup_line_frac", s["dup_line_frac"], p.dup_line_frac, "max"),
            _Rule("dup_line_char_frac", s["dup_line_char_frac"], p.dup_line_char_frac, "max"),
        ]
        rules += [_Rule(f"top_{k}_gram", s[f"top_{k}_gram_char_frac"], limit, "max") for k, limit in p.top_n_grams]
        rules += [
            _Rule(f"duplicated_{k}_n_grams", s[f"dup_{k}_gram_char_frac"], limit, "max") for k, limit in p.dup_n_grams
        ]
        return self._finish(batch, signals, rules)


# --- C4 -----------------------------------------------------------------------------------------------------

_C4_COUNTS = ("lines", "kept_lines", "sentences", "too_long_word_lines", "no_terminal_punct_lines",
              "too_few_words_lines", "javascript_lines", "policy_lines")  # fmt: skip
#: RE2 has Python's ``\\d`` (any decimal digit, not only ASCII) only as this class.
_DIGIT = _re2_class(c for c in map(chr, range(0x20000)) if c.isdecimal())
_CITATION = rf"\[{_DIGIT}*\]|\[edit\]|\[citation needed\]"
_POLICY = "terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies"
_END_PUNCTUATION = (".", "?", "!", '"', "'")
#: A whitespace run spaCy keeps as a token: any but one plain space (ASCII " " between two chunks).
_WHITESPACE_TOKEN_RUN = f"{_SPACE}{{2,}}|{_SPACE_NOT_SPACE}"
#: Stands in for such a run: a chunk of one token of sentence class W, as spaCy's whitespace token is.
_WHITESPACE_TOKEN = "\ue000"


def _first_line(rows: np.ndarray, index: np.ndarray, hit: np.ndarray | None, n: int) -> np.ndarray:
    """Per text, the number of its first line where ``hit`` holds (NaN if none or ``hit`` is None)."""
    out = np.full(n, np.nan)
    if hit is not None and hit.any():
        hit_rows = rows[hit]
        first = np.flatnonzero(np.diff(hit_rows, prepend=-1))
        out[hit_rows[first]] = index[hit][first]
    return out


def _lower_contains(lines: pa.Array, patterns: Sequence[str]) -> list[np.ndarray]:
    """Per RE2 ``pattern`` of ASCII text: where ``line.lower()`` has a match.

    Arrow lowercases by the simple case mapping, which gives different ASCII than Python's ``str.lower``
    only for U+0130 ("İ" is "i̇" in Python, "i" here); lines with one are lowercased by Python.
    """
    lower = pc.utf8_lower(lines)
    hits = [np.array(pc.match_substring_regex(lower, pattern).to_numpy(zero_copy_only=False)) for pattern in patterns]
    for i in np.flatnonzero(pc.match_substring(lines, "\u0130").to_numpy(zero_copy_only=False)):
        line = lines[int(i)].as_py().lower()
        for hit, pattern in zip(hits, patterns, strict=True):
            hit[i] = re.search(pattern, line) is not None
    return hits


@register
class C4Quality(_HeuristicFilter):
    """C4's line and page rules (Raffel et al. 2020, JMLR 21(140), section 2.2) as datatrove's
    ``C4QualityFilter`` applies them with its default ``split_paragraph=True``.

    Lines are dropped when they have a word over 1000 characters, lack terminal punctuation, have fewer
    than 3 words, or mention javascript or cookie/terms policies; the page is dropped if a surviving line
    says "lorem ipsum" or has a curly bracket (first such line decides), or if fewer than 5 sentences
    survive (spaCy sentencizer rules on each line). FineWeb runs it with ``filter_no_terminal_punct=False``.

    ``remove_lines`` makes the stage a modifier as well, as datatrove always is: kept documents get the
    surviving lines (stripped, citations removed) as their ``text``. The line counts are recorded either way.
    """

    name = "c4_quality"

    class Params(StageParams):
        remove_citations: bool = Field(True, description="strip Wikipedia-style [1], [edit], [citation needed]")
        filter_no_terminal_punct: bool = Field(True, description="C4: drop lines not ending in . ? ! \" ' (or in ...)")
        min_num_sentences: int | None = Field(5, description="C4: a page needs 5 sentences in its kept lines")
        min_words_per_line: int | None = Field(3, description="C4: drop lines with fewer than 3 words")
        max_word_length: int | None = Field(1000, description="C4 code: drop lines with a word over 1000 characters")
        filter_lorem_ipsum: bool = Field(True, description="C4: drop pages with 'lorem ipsum'")
        filter_javascript: bool = Field(True, description="C4: drop lines mentioning javascript")
        filter_curly_bracket: bool = Field(True, description="C4: drop pages with '{' (code)")
        filter_policy: bool = Field(True, description="C4 code: drop cookie / terms-of-use / privacy-policy lines")
        remove_lines: bool = Field(False, description="rewrite text to the kept lines, as datatrove does")

    def setup(self) -> None:
        self._vocabulary = token_vocabulary()

    def _sentences(self, lines: pa.Array) -> np.ndarray:
        """Sentences spaCy's sentencizer finds in each stripped line (datatrove's ``split_into_sentences``).

        Tokens are classed E (ends a sentence), P (other punctuation) or W; a sentence starts at each W
        token with an E since the line's previous W (the regex ``E[EP]*W``, counted over token classes).
        """
        marked = pc.replace_substring_regex(lines, _WHITESPACE_TOKEN_RUN, f" {_WHITESPACE_TOKEN} ")
        tokens = self._vocabulary.tokens(marked)
        classes = tokens.sentence_class[tokens.ids]
        line = np.repeat(np.arange(len(lines)), tokens.counts)
        ends = np.cumsum(classes == _E)
        w = np.flatnonzero(classes == _W)
        since = np.maximum(np.concatenate(([-1], w[:-1])), (np.cumsum(tokens.counts) - tokens.counts)[line[w]] - 1)
        breaks = ends[w] - np.where(since >= 0, ends[np.maximum(since, 0)], 0) > 0
        return 1 + np.bincount(line[w], breaks, minlength=len(lines))

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        texts = _text_array(batch)
        n = len(texts)
        raw, rows = split_lines(texts)
        lines = pc.utf8_trim_whitespace(raw)
        per_text = np.bincount(rows, minlength=n)
        index = np.arange(len(rows)) - (np.cumsum(per_text) - per_text)[rows]  # a line's number in its text
        chunks, chunk_rows = whitespace_chunks(lines)
        words = np.bincount(chunk_rows, minlength=len(rows))
        alive = np.ones(len(rows), bool)  # lines no rule has dropped yet, in datatrove's order of rules

        def drop(hit: np.ndarray) -> np.ndarray:
            hit = hit & alive
            alive[hit] = False
            return np.bincount(rows[hit], minlength=n)

        counts = {"lines": per_text}
        too_long = np.zeros(len(rows), bool)
        if p.max_word_length is not None:
            longest = _segment_reduce(np.maximum, pc.utf8_length(chunks).to_numpy(), words)
            too_long = longest > p.max_word_length
        counts["too_long_word_lines"] = drop(too_long)
        if p.remove_citations:
            lines = pc.replace_substring_regex(lines, _CITATION, "")
        no_terminal = np.zeros(len(rows), bool)
        if p.filter_no_terminal_punct:
            no_terminal = (_ends_with_any(lines, _END_PUNCTUATION) == 0) | pc.ends_with(lines, "...").to_numpy(
                zero_copy_only=False
            )
        counts["no_terminal_punct_lines"] = drop(no_terminal)
        few = words < p.min_words_per_line if p.min_words_per_line is not None else np.zeros(len(rows), bool)
        counts["too_few_words_lines"] = drop(few)
        lower = _lower_contains(lines, ["lorem ipsum", "javascript", _POLICY])
        lorem_line = _first_line(rows, index, alive & lower[0] if p.filter_lorem_ipsum else None, n)
        counts["javascript_lines"] = drop(lower[1] if p.filter_javascript else np.zeros(len(rows), bool))
        curly = pc.match_substring(lines, "{").to_numpy(zero_copy_only=False)
        curly_line = _first_line(rows, index, alive & curly if p.filter_curly_bracket else None, n)
        counts["policy_lines"] = drop(lower[2] if p.filter_policy else np.zeros(len(rows), bool))

        kept, kept_rows = lines.filter(pa.array(alive)), rows[alive]
        counts["kept_lines"] = np.bincount(kept_rows, minlength=n)
        counts["sentences"] = np.bincount(kept_rows, self._sentences(kept), minlength=n).astype(np.int64)
        counts = {name: counts[name].astype(np.int64) for name in _C4_COUNTS}
        kept_texts = None
        if p.remove_lines:
            offsets = np.concatenate(([0], np.cumsum(counts["kept_lines"]))).astype(np.int32)
            kept_texts = pc.utf8_trim_whitespace(pc.binary_join(pa.ListArray.from_arrays(offsets, kept), "\n"))

        signals: dict[str, np.ndarray] = {**counts, "lorem_ipsum_line": lorem_line, "curly_bracket_line": curly_line}
        # datatrove returns at the first surviving line with either; on one line "lorem ipsum" is checked first.
        lorem_first = ~np.isnan(lorem_line) & ~(curly_line < lorem_line)
        curly_first = ~np.isnan(curly_line) & ~lorem_first
        rules = [
            _Rule("lorem_ipsum", lorem_first),
            _Rule("curly_bracket", curly_first),
            _Rule("too_few_sentences", counts["sentences"], p.min_num_sentences, "min"),
        ]
        batch = self._finish(batch, signals, rules)
        if p.remove_lines:
            removed_here = pc.equal(batch.column("removed_by"), self.name).fill_null(False)
            text = pc.if_else(removed_here, batch.column("text"), pa.chunked_array([kept_texts]))
            batch = set_column(batch, "text", text)
        return batch


# --- FineWeb ------------------------------------------------------------------------------------------------


@register
class FineWebQuality(_HeuristicFilter):
    """FineWeb's own rules (Penedo et al. 2024, arXiv:2406.17557, section 3.3) as datatrove's
    ``FineWebQualityFilter`` applies them: enough lines end in punctuation, not mostly short lines, almost no
    duplicated lines, and not a list (many newlines per word). Lines are the non-blank ``\\n``-split lines.
    """

    name = "fineweb_quality"

    class Params(StageParams):
        line_punct_thr: float | None = _fraction("FineWeb: ≥ 12% of lines end in terminal punctuation", 0.12)
        line_punct_exclude_zero: bool = Field(False, description="FineWeb: keep pages where no line does")
        stop_chars: tuple[str, ...] | None = Field(
            None, description="line endings that count as punctuation (default: datatrove's TERMINAL_PUNCTUATION)"
        )
        short_line_thr: float | None = _fraction("FineWeb: ≤ 67% of lines are short", 0.67)
        short_line_length: int = Field(30, ge=0, description="FineWeb: a short line has at most 30 characters")
        char_duplicates_ratio: float | None = _fraction("FineWeb: ≤ 1% of characters in duplicated lines", 0.01)
        new_line_ratio: float | None = _fraction("FineWeb: ≤ 0.3 newlines per word", 0.3)

    def setup(self) -> None:
        self._vocabulary = token_vocabulary()
        self._stop_chars = tuple(self.params.stop_chars or sorted(TERMINAL_PUNCTUATION))

    def process(self, batch: pa.Table) -> pa.Table:
        p = self.params
        texts = _text_array(batch)
        n = len(texts)
        lines, rows = _pieces(pc.split_pattern(texts, "\n"))
        blank = pc.or_(pc.equal(pc.binary_length(lines), 0), pc.utf8_is_space(lines))
        keep = pc.invert(blank)
        lines, rows = lines.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
        n_lines, _, dup_chars = duplicate_pieces(lines, rows, n)
        punct = np.bincount(rows, _ends_with_any(lines, self._stop_chars), minlength=n)
        is_short = pc.less_equal(pc.utf8_length(lines), p.short_line_length).to_numpy(zero_copy_only=False)
        short = np.bincount(rows, is_short, minlength=n)
        newlines = _count(texts, "\n")
        chars = pc.utf8_length(texts).to_numpy().astype(np.float64) - newlines
        lines = n_lines
        words = self._vocabulary.tokens(texts, _keys(batch)).counts

        signals = {
            "lines": lines.astype(np.int64),
            "line_punct_ratio": _ratio(punct, lines),
            "short_line_ratio": _ratio(short, lines),
            "char_dup_ratio": _ratio(dup_chars, chars),
            "list_ratio": _ratio(newlines, words),
        }
        punct_rule = signals["line_punct_ratio"]
        if p.line_punct_exclude_zero:
            punct_rule = np.where(punct_rule == 0, np.nan, punct_rule)
        rules = [
            _Rule("empty", lines == 0),
            _Rule("line_punct_ratio", punct_rule, p.line_punct_thr, "min"),
            _Rule("short_line_ratio", signals["short_line_ratio"], p.short_line_thr, "max"),
            _Rule("char_dup_ratio", signals["char_dup_ratio"], p.char_duplicates_ratio, "max"),
            _Rule("list_ratio", signals["list_ratio"], p.new_line_ratio, "max"),
        ]
        return self._finish(batch, signals, rules)

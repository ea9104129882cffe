"""Personal data and secrets: find them, then redact, tag, or remove the document, per kind.

Kinds (in the order they claim overlapping text): ``private_key`` (PEM blocks), ``aws_key`` (access key
ids), ``api_token`` (GitHub, Slack, Stripe, Google, OpenAI key formats), ``bearer_token``, ``email``
(also ``name [at] host [dot] de`` obfuscations, and fediverse handles ``@name@host``, which are
addresses), ``iban`` (country format and mod-97 checked by python-stdnum), ``credit_card`` (network prefix
and Luhn checked), ``ip_address`` (IPv4, and IPv6 in global unicast 2000::/3; only public addresses by
default, as FineWeb anonymised), ``phone`` (E.164 ``+…`` numbers and national formats, checked by
libphonenumber for the regions of the document's ``language`` when that column is present, then
``phone_regions``; digits without separators only right after a word such as "Telefon").

Public and example data is left alone: ``example.com/.net/.org`` and the reserved ``.example``,
``.test``, ``.invalid``, ``.localhost`` names (``allow_domains`` adds more), documentation, private and
other non-global IP ranges (``public_ips_only``), the NANP 555-01xx and Ofcom drama numbers, and the
published test card numbers, IBANs and the AWS documentation key.

Why regular expressions and validators instead of Presidio (NeMo Curator's choice) or scrubadub: a
spaCy NER pass costs ~100 docs/s per core, while every kind here has a format and most a checksum. Each
batch first runs one RE2 prefilter per kind over all rows in pyarrow; only rows a prefilter hits are
scanned in Python, and only the candidates are validated.

Outputs: ``pii_<kind>_count`` per enabled kind, and ``pii_spans`` (kind, start, end in the output text in
characters, and ``masked``: the original's shape with every letter and digit as ``•``, so an audit can
show before and after without the value). The original values are written nowhere unless
``keep_originals`` is set (then ``pii_spans.original`` holds them). A document removed by a
``remove_doc`` kind is stored redacted too; ``tag`` kinds are counted and located but stay in the text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, model_validator

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams

Mode = Literal["redact", "tag", "remove_doc", "off"]

#: Claim order: a longer, more specific kind wins text that two kinds match (a card number is not a phone).
KINDS = ("private_key", "aws_key", "api_token", "bearer_token", "email", "iban", "credit_card", "ip_address",
         "phone")

SPAN_TYPE = pa.struct([pa.field("kind", pa.string()), pa.field("start", pa.int64()), pa.field("end", pa.int64()),
                       pa.field("masked", pa.string()), pa.field("original", pa.string())])

#: Regions whose national formats are tried for a document in this language (libphonenumber region codes).
LANGUAGE_REGIONS: dict[str, tuple[str, ...]] = {
    "en": ("US", "GB", "CA", "AU", "IE", "NZ", "IN", "ZA"), "de": ("DE", "AT", "CH"), "fr": ("FR", "BE", "CH", "CA"),
    "es": ("ES", "MX", "AR", "CO", "CL"), "it": ("IT", "CH"), "nl": ("NL", "BE"), "pt": ("PT", "BR"), "pl": ("PL",),
    "ru": ("RU",), "uk": ("UA",), "cs": ("CZ",), "sv": ("SE",), "da": ("DK",), "no": ("NO",), "fi": ("FI",),
    "ja": ("JP",), "ko": ("KR",), "zh": ("CN", "TW", "HK"), "tr": ("TR",), "el": ("GR",), "hu": ("HU",),
}

_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost", "local"})
#: Published test numbers (card networks' and payment processors' documentation) and documentation IBANs.
_TEST_CARDS = frozenset({
    "4111111111111111", "4242424242424242", "4012888888881881", "4000056655665556", "4222222222222",
    "5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222", "378282246310005",
    "371449635398431", "378734493671000", "6011111111111117", "6011000990139424", "3530111333300000",
    "3566002020360505", "30569309025904", "38520000023237", "6200000000000005",
})
_EXAMPLE_IBANS = frozenset({"DE89370400440532013000", "GB82WEST12345698765432", "GB29NWBK60161331926819",
                            "FR1420041010050500013M02606", "NL91ABNA0417164300", "CH9300762011623852957"})


class PiiParams(StageParams):
    email: Mode = "redact"
    phone: Mode = "redact"
    ip_address: Mode = "redact"
    credit_card: Mode = "redact"
    iban: Mode = "redact"
    aws_key: Mode = "redact"
    private_key: Mode = "redact"
    bearer_token: Mode = "redact"
    api_token: Mode = "redact"
    placeholder: Literal["kind", "hash"] = Field(
        "kind", description="kind: <EMAIL>, <PHONE>, …; hash: <EMAIL_1a2b3c4d>, a salted hash of the normalised "
        "value, so one address maps to one token wherever it occurs (needs salt)")
    salt: str | None = Field(None, description="secret mixed into hashed placeholders (keep it out of the corpus)")
    placeholders: dict[str, str] = Field(default_factory=dict, description="per kind, a placeholder instead of <KIND>")
    allow_domains: list[str] = Field(default_factory=list, description="email domains left alone (and their "
                                     "subdomains), besides example.com/.net/.org and .example/.test/.invalid")
    public_ips_only: bool = Field(True, description="leave private, loopback, link-local, documentation and other "
                                  "non-global addresses alone (datatrove's only_remove_public_ip)")
    phone_regions: list[str] = Field(["US", "GB", "DE", "FR"], description="regions whose national formats are "
                                     "checked, after those of the document's language when there is a language "
                                     "column ('+' numbers need none)")
    keep_originals: bool = Field(False, description="also write each span's original value (pii_spans.original): "
                                 "for audits of the detector only, it puts the personal data back in the output")

    @model_validator(mode="after")
    def _check(self) -> PiiParams:
        if self.placeholder == "hash" and not self.salt:
            raise ValueError("placeholder: hash needs a salt (a secret string; the same salt gives the same tokens)")
        unknown = sorted(set(self.placeholders) - set(KINDS))
        if unknown:
            raise ValueError(f"placeholders: unknown kinds {unknown}; kinds are {list(KINDS)}")
        return self

    def modes(self) -> dict[str, Mode]:
        """The enabled kinds in claim order, with their modes."""
        return {kind: getattr(self, kind) for kind in KINDS if getattr(self, kind) != "off"}


@dataclass(frozen=True)
class Found:
    """A detected span of the input text, with its value normalised for hashing (``key``)."""

    kind: str
    start: int
    end: int
    key: str


# ---- detectors --------------------------------------------------------------------------------------
# Each kind has an RE2 prefilter (pyarrow, whole batch; a superset of what the Python pattern matches) and
# a Python pattern whose matches a validator accepts (returning the normalised value) or rejects (None).

_OBFUSCATED_AT = r"\s*[\[({<]{1,2}\s*(?:at|AT|At|ad|AD|a|@)\s*[\])}>]{1,2}\s*|\s+AT\s+|[ \t]+@[ \t]+"
_OBFUSCATED_DOT = r"\s*[\[({<]\s*(?:dot|DOT|Dot|punkt|PUNKT)\s*[\])}>]\s*|\s+DOT\s+"
_EMAIL = re.compile(
    r"(?<![\w.%+\-$#'*^`{|}~])(?P<local>[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63})(?P<at>@|＠|" + _OBFUSCATED_AT + r")"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.|" + _OBFUSCATED_DOT + r"))+[A-Za-z]{2,24})"
    r"(?![A-Za-z\-_]|\.[A-Za-z0-9])")  # a digit may follow: extraction glues blocks ("info@x.fr4 rue …")
_DOT_WORDS = re.compile(_OBFUSCATED_DOT)
_GLUED_WORD = re.compile(r"[a-z]{2,}(?=[A-Z][a-z])")  # "almamedia.fiAsiakastuki": the TLD, then the next block
_URL_BEFORE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#]*$")  # the address would be a URL's userinfo

_SEP = r"[ \t\xa0.\-/–]"  # separators inside a number (never a line break: one line, one number)
_PHONE = re.compile(
    r"(?<![0-9+/.\-])(?:(?<![A-Za-z])|(?=\())(?:"  # after a letter only "(…": "name@x.com(509) 459-5382"
    rf"(?:\+ ?|00)[1-9][0-9]{{0,2}}(?:{_SEP}{{0,3}}\(0\))?(?:{_SEP}{{0,3}}\(?[0-9]{{1,6}}\)?){{1,7}}"  # international
    rf"|\(0?[0-9]{{1,5}}\){_SEP}{{0,3}}[0-9]{{2,}}(?:{_SEP}{{1,3}}[0-9]+){{0,5}}"  # (area) number
    rf"|0[0-9]{{0,5}}(?:{_SEP}{{0,3}}\(0\))?(?:{_SEP}{{1,3}}[0-9]+){{1,7}}"  # national trunk 0 …
    rf"|(?:1[ .\-]?)?[2-9][0-9]{{2}}[ .\-][0-9]{{3}}[ .\-][0-9]{{4}}"  # NANP 3-3-4
    r")(?![0-9]|-[0-9]|[.,][0-9])")
#: Digits without separators are a phone number only right after a word saying so ("Telefon: 017656998944").
_PHONE_BARE = re.compile(r"(?<![\w+])(?:\+|00|0)[1-9][0-9]{6,13}(?![0-9])")
_PHONE_CONTEXT = re.compile(r"(?:tel|fon|phone|fax|mobil|handy|call|cell|whatsapp|puh|nummer|number|tlf|ph)\w*\.?"
                            r"[^0-9\n]{0,12}$", re.IGNORECASE)
#: A long digit run right after one of these words is an identifier, not a card number.
_CARD_BLOCKERS = re.compile(r"\b(?:order|invoice|tracking|ref|reference|id|no|nr|number|account|konto|ean|gtin|upc|sku|"
                            r"isbn|post|tweet|status)[\s.:#-]*$", re.IGNORECASE)
_PHONE_BLOCKERS = re.compile(r"(?:isbn|issn|doi|arxiv|pmid|ean|gtin|sku|art\.?[\s-]?nr|order|invoice)[\s.:#-]*$",
                             re.IGNORECASE)
#: A date (01.02.2024, 2024-01-15, 04/26/2011 …) at the start of a candidate ("03/05/2022 20:36" is no
#: phone), a dated one anywhere in it ("0.5 2003-03-08"), or a decimal start ("0.8-20031228").
_DATE_START = re.compile(r"[0-9]{1,4}[./\-][0-9]{1,2}[./\-][0-9]{2,4}(?![0-9])|0\.[0-9]")
_DATE_INSIDE = re.compile(r"(?:19|20)[0-9]{2}[./\-][01]?[0-9][./\-][0-3]?[0-9]"
                          r"|[0-3]?[0-9][./\-][01]?[0-9][./\-](?:19|20)[0-9]{2}")
_TIME_AFTER = re.compile(r"[:h][0-9]{2}")
_IP_CONTEXT = re.compile(r"(?:\bip|ipv4|address|adresse|dns|server|host|gateway|ping|router|vpn|proxy)"
                         r"\W*(?:\w+\W+){0,3}$", re.IGNORECASE)

_CARD = re.compile(r"(?<![0-9\w])(?<![0-9][ \-])(?:[0-9]{4}[ \-]){3}[0-9]{1,7}(?![0-9]|[ \-][0-9])"
                   r"|(?<![0-9\w])[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5}(?![0-9]|[ \-][0-9])"
                   r"|(?<![0-9\w])[0-9]{13,19}(?![0-9\w])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.[0-9])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|::)[0-9A-Fa-f:]{2,38}(?![\w:]|\.[0-9])")
_VERSION_BEFORE = re.compile(r"(?:version|versión|ver\.|release|build|firmware|v)\s*$", re.IGNORECASE)
_AWS_KEY = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"  # to its END, or its base64
                          r"(?:[\s\S]{0,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                          r"|[A-Za-z0-9+/=\s:\-,]*)")
_BEARER = re.compile(r"(?<=[Bb]earer )[A-Za-z0-9\-._~+/]{20,}=*")
_API_TOKEN = re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"
                        r"|xox[abposr]-[A-Za-z0-9\-]{10,}|[sr]k_live_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_\-]{35}"
                        r"|sk-(?:proj-)?[A-Za-z0-9_\-]{32,})(?![\w])")

PREFILTERS: dict[str, str] = {
    "email": r"[@＠]|[\[({<]\s*(?i:at|ad|a)\s*[\])}>]| AT ",
    "phone": r"\+\s?[1-9]|\(\s*[0-9]{2}|[0-9][\s./\-–]{1,3}[0-9]|0[1-9][0-9]{6}",
    "credit_card": r"(?:[0-9][ \-]?){12}[0-9]",
    "iban": r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}",
    "ip_address": r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:",
    "aws_key": r"A[KSBC][IC]A[A-Z0-9]{16}",
    "private_key": r"PRIVATE KEY",
    "bearer_token": r"[Bb]earer [A-Za-z0-9\-._~+/]{20}",
    "api_token": r"gh[pousr]_|github_pat_|xox[abposr]-|[sr]k_live_|AIza|sk-",
}


@cache
def top_level_domains() -> frozenset[str]:
    """Every public top-level domain, from the Public Suffix List that the ``tld`` package ships (no download)."""
    text = resources.files("tld").joinpath("res/effective_tld_names_public_only.dat.txt").read_text("utf-8")
    rules = (line.strip() for line in text.splitlines())
    return frozenset(rule.split(".")[-1].lstrip("*!").lower() for rule in rules if rule and not rule.startswith("//"))


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The network whose prefix and length this number has (None: no issuer uses it)."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or 644 <= int(digits[:3]) <= 649 or p2 == 65) and 16 <= n <= 19:
        return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    return None


def _fictional_phone(e164: str) -> bool:
    """NANP 555-0100..0199 and Ofcom's drama ranges, reserved for fiction and documentation."""
    if e164.startswith("+1") and len(e164) == 12 and e164[5:9] == "5550" and e164[9] == "1":
        return True
    drama = ("+44207946", "+44113496", "+44114496", "+44115496", "+44116496", "+44117496", "+44118496",
             "+44121496", "+44131496", "+44141496", "+44151496", "+44161496", "+44191498", "+44289018",
             "+44292018", "+4477009")
    return e164.startswith(drama)


@lru_cache(maxsize=1 << 16)
def phone_number(candidate: str, regions: tuple[str, ...]) -> str | None:
    """The E.164 form of a valid phone number written as ``candidate`` (national formats tried per region)."""
    import phonenumbers

    tries = (None,) if candidate.lstrip().startswith("+") else regions
    for region in tries:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            return None if _fictional_phone(e164) else e164
    return None


class Detectors:
    """The compiled detectors of one parameter set; :meth:`find` lists the accepted spans of a text."""

    def __init__(self, params: PiiParams) -> None:
        self.params = params
        self.tlds = top_level_domains()
        self.allowed = tuple(d.lower().lstrip(".") for d in (*_RESERVED_DOMAINS, *params.allow_domains))
        self.finders: dict[str, Callable[[str, tuple[str, ...]], Iterator[Found]]] = {
            "email": self._emails, "phone": self._phones, "credit_card": self._cards, "iban": self._ibans,
            "ip_address": self._ips, "aws_key": self._aws_keys, "private_key": self._private_keys,
            "bearer_token": self._bearer_tokens, "api_token": self._api_tokens,
        }

    def find(self, text: str, kinds: list[str], regions: tuple[str, ...]) -> list[Found]:
        """Accepted spans of ``kinds`` (in claim order), without overlaps, sorted by position."""
        taken: list[Found] = []
        for kind in kinds:
            for found in self.finders[kind](text, regions):
                if not any(found.start < t.end and t.start < found.end for t in taken):
                    taken.append(found)
        return sorted(taken, key=lambda f: f.start)

    def _emails(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _EMAIL.finditer(text):
            written, end = m["domain"], m.end()
            glued = _GLUED_WORD.match(written, written.rfind(".") + 1)
            if glued and written[written.rfind(".") + 1:].lower() not in self.tlds:
                end -= len(written) - glued.end()
                written = written[:glued.end()]
            domain = _DOT_WORDS.sub(".", written).lower()
            tld = domain.rsplit(".", 1)[-1]
            if tld in _RESERVED_TLDS or tld not in self.tlds:
                continue  # logo@2x.png, name@host.test
            if any(domain == d or domain.endswith("." + d) for d in self.allowed):
                continue
            if m["at"] == "@" and _URL_BEFORE.search(text, max(0, m.start() - 200), m.start()):
                continue  # ftp://user:pass@host: a URL's credentials, not an address
            yield Found("email", m.start(), end, f"{m['local'].lower()}@{domain}")

    def _phones(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        bare = (m for m in _PHONE_BARE.finditer(text) if _PHONE_CONTEXT.search(text, max(0, m.start() - 30), m.start()))
        for m in (*_PHONE.finditer(text), *bare):
            value = m.group(0)
            digits = re.sub(r"[^0-9]", "", value)
            if not 8 <= len(digits) <= 15 or _DATE_START.match(value) or _TIME_AFTER.match(text, m.end()):
                continue
            if _DATE_INSIDE.search(value):
                continue
            if _PHONE_BLOCKERS.search(text, max(0, m.start() - 20), m.start()):
                continue
            e164 = phone_number(value, regions)
            if e164:
                yield Found("phone", m.start(), m.end(), e164)

    def _cards(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _CARD.finditer(text):
            digits = re.sub(r"[ \-]", "", m.group(0))
            if _CARD_BLOCKERS.search(text, max(0, m.start() - 24), m.start()):
                continue
            if 13 <= len(digits) <= 19 and card_network(digits) and luhn_valid(digits) and digits not in _TEST_CARDS:
                yield Found("credit_card", m.start(), m.end(), digits)

    def _ibans(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        from stdnum import iban

        for m in _IBAN.finditer(text):
            compact = m.group(0).replace(" ", "")
            # the pattern may run on into following letters/digits; take the longest valid prefix
            for end in range(len(compact), 14, -1):
                if iban.is_valid(compact[:end]):
                    if compact[:end] not in _EXAMPLE_IBANS:
                        yield Found("iban", m.start(), m.start() + _span_of(m.group(0), end), compact[:end])
                    break

    def _ips(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue  # "version 1.2.3.4", "v10.0.0.1"
            if int(m.group(0).split(".")[0]) < 10 and not _IP_CONTEXT.search(text, max(0, m.start() - 60), m.start()):
                continue  # "Python 3.11.4.1", "Desktop 2.9.0.5": a version, unless the text says IP (DNS 8.8.8.8)
            found = self._ip(m, 4)
            if found:
                yield found
        for m in _IPV6.finditer(text):
            value = m.group(0)
            if value.count(":") < 2 or not re.match(r"[23][0-9a-fA-F]{3}:", value):
                continue  # only global unicast 2000::/3: "a::b" and "12:30:45" are not addresses here
            found = self._ip(m, 6)
            if found:
                yield found

    def _ip(self, m: re.Match, version: int) -> Found | None:
        try:
            address = ipaddress.ip_address(m.group(0))
        except ValueError:
            return None
        if address.version != version or (self.params.public_ips_only and not address.is_global):
            return None
        return Found("ip_address", m.start(), m.end(), address.compressed)

    def _aws_keys(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _AWS_KEY.finditer(text):
            if not m.group(0).endswith("EXAMPLE"):  # AKIAIOSFODNN7EXAMPLE, AWS's documentation key
                yield Found("aws_key", m.start(), m.end(), m.group(0))

    def _private_keys(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _PRIVATE_KEY.finditer(text):
            yield Found("private_key", m.start(), m.end(), m.group(0))

    def _bearer_tokens(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _BEARER.finditer(text):
            yield Found("bearer_token", m.start(), m.end(), m.group(0))

    def _api_tokens(self, text: str, regions: tuple[str, ...]) -> Iterator[Found]:
        for m in _API_TOKEN.finditer(text):
            yield Found("api_token", m.start(), m.end(), m.group(0))


def _span_of(written: str, compact_length: int) -> int:
    """Characters of ``written`` (with spaces) that hold its first ``compact_length`` non-space characters."""
    seen = 0
    for i, ch in enumerate(written):
        if ch != " ":
            seen += 1
            if seen == compact_length:
                return i + 1
    return len(written)


_ALNUM = re.compile(r"[^\W_]")


def masked(value: str) -> str:
    """The shape of a value with nothing of it: every letter and digit as ``•``."""
    return _ALNUM.sub("•", value)


@register
class Pii(DocumentStage):
    """Detects personal data and secrets; per kind redacts them, tags them, or removes the document.

    Adds ``pii_<kind>_count`` for every enabled kind and ``pii_spans``; a ``remove_doc`` kind removes a
    document holding it with reason ``pii_<kind>`` (score: its count, threshold 1).
    """

    name = "pii"
    Params = PiiParams
    params: PiiParams

    def setup(self) -> None:
        self.detectors = Detectors(self.params)
        self.modes = self.params.modes()

    def _regions(self, language: str | None) -> tuple[str, ...]:
        """National formats tried: the language's regions first, then ``phone_regions``."""
        own = LANGUAGE_REGIONS.get(language or "", ())
        return own + tuple(r for r in self.params.phone_regions if r not in own)

    def placeholder(self, found: Found) -> str:
        p = self.params
        base = p.placeholders.get(found.kind, f"<{found.kind.upper()}>")
        if p.placeholder == "kind":
            return base
        digest = xxhash.xxh3_64_hexdigest(f"{p.salt}\x1f{found.kind}\x1f{found.key}")[:8]
        return f"{base[:-1]}_{digest}>" if base.endswith(">") else f"{base}_{digest}"

    def candidates(self, texts: pa.ChunkedArray | pa.Array) -> dict[str, np.ndarray]:
        """Per enabled kind, the rows its RE2 prefilter hits (one vectorised pass over the batch)."""
        return {kind: pc.fill_null(pc.match_substring_regex(texts, PREFILTERS[kind]), False).to_numpy(
            zero_copy_only=False) for kind in self.modes}

    def redact(self, text: str, spans: list[Found]) -> tuple[str, list[dict]]:
        """The text with redact/remove_doc spans replaced, and every span located in that text."""
        pieces, located, shift, last = [], [], 0, 0
        for found in spans:
            value = text[found.start:found.end]
            replace = self.modes[found.kind] != "tag"
            out = self.placeholder(found) if replace else value
            pieces += [text[last:found.start], out]
            start = found.start + shift
            located.append({"kind": found.kind, "start": start, "end": start + len(out), "masked": masked(value),
                            "original": value if self.params.keep_originals else None})
            shift += len(out) - len(value)
            last = found.end
        pieces.append(text[last:])
        return "".join(pieces), located

    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        texts = pc.fill_null(batch["text"], "")
        hits = self.candidates(texts) if n else {kind: np.zeros(0, bool) for kind in self.modes}
        any_hit = np.zeros(n, bool)
        for mask in hits.values():
            any_hit |= mask
        rows = np.flatnonzero(any_hit)
        counts = {kind: np.zeros(n, np.int32) for kind in self.modes}
        spans: list[list[dict]] = [[] for _ in range(n)]
        languages = batch["language"].take(pa.array(rows)).to_pylist() if "language" in batch.column_names \
            else [None] * len(rows)
        new_text = pc.take(texts, pa.array(rows)).to_pylist() if len(rows) else []
        changed = np.zeros(n, bool)
        for k, (row, text, language) in enumerate(zip(rows, new_text, languages, strict=True)):
            kinds = [kind for kind in self.modes if hits[kind][row]]
            regions = self._regions(language)
            found = self.detectors.find(text, kinds, regions)
            if not found:
                continue
            for f in found:
                counts[f.kind][row] += 1
            new_text[k], spans[row] = self.redact(text, found)
            changed[row] = new_text[k] != text
        if changed.any():
            index = np.full(n, -1)
            index[rows] = np.arange(len(rows))
            replaced = pa.array([new_text[index[i]] if changed[i] else None for i in range(n)], pa.string())
            batch = set_column(batch, "text", pc.if_else(pa.array(changed), replaced, batch["text"]))
        for kind, values in counts.items():
            batch = set_column(batch, f"pii_{kind}_count", pa.array(values, pa.int32()))
        batch = set_column(batch, "pii_spans", pa.array(spans, pa.list_(SPAN_TYPE)))
        for kind, mode in self.modes.items():
            if mode == "remove_doc":
                batch = self.remove(batch, pa.array(counts[kind] > 0), f"pii_{kind}",
                                    pa.array(counts[kind].astype(np.float64)), 1.0)
        return batch

"""Source keys: which publisher or community a URL belongs to, so a whole pathological source can be caught.

A host is the right unit for most sites, but not for sites that host many independent communities: one
subreddit of "m" repeated thousands of times (r/microwavegang) must not condemn all of reddit.com, and
one healthy subreddit must not dilute it. :class:`SourceRules` maps such URLs to a community path
(``reddit.com/r/<name>``, a forum board); every other URL falls back to its normalised host.

Rules are data (pipeline YAML), matched with pyarrow's RE2 kernels over whole columns.
"""

from __future__ import annotations

import re
import string

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: scheme://[userinfo@]host[:port]<path?query>[#fragment]; the fragment never names a source.
_URL_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)(?::[0-9]*)?(?P<rest>[^#]*)"
#: ``www.`` and a trailing root dot do not change the site.
_HOST_NOISE = r"^www\.|\.$"


def _glob_to_regex(glob: str) -> str:
    """Anchored RE2 pattern for a host glob where ``*`` spans any characters (dots included)."""
    return "^" + re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".") + "$"


class SourceRule(BaseModel):
    """One URL → key mapping: a host pattern, an optional path pattern, and a key template.

    ``path`` is searched (RE2, unanchored unless it starts with ``^``) in the URL's path plus query, and
    may only use *named* groups (``(?P<board>...)``; ``(?:...)`` for grouping), because pyarrow's
    ``extract_regex`` returns named groups only. ``key`` is a ``str.format`` template over ``host`` (the
    normalised host) and those groups; the result is lowercased.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = Field(
        None, description="glob over the lowercased host without 'www.', e.g. '*.stackexchange.com'"
    )
    host_regex: str | None = Field(None, description="RE2 regex over the same host, when a glob cannot say it")
    path: str | None = Field(None, description="RE2 regex with named groups, searched in path + query")
    key: str = Field(description="key template, e.g. 'reddit.com/r/{name}' or '{host}'")

    @model_validator(mode="after")
    def _check(self) -> SourceRule:
        if (self.host is None) == (self.host_regex is None):
            raise ValueError("give exactly one of 'host' (glob) or 'host_regex'")
        empty = pa.nulls(0, pa.string())  # pa.array([]) would import pandas (0.2 s) at every start-up
        try:
            pc.match_substring_regex(empty, self.host_pattern)
            groups = {f.name for f in pc.extract_regex(empty, self.path).type} if self.path else set()
        except pa.ArrowInvalid as exc:  # RE2 rejects what Python's re accepts (look-arounds, back-references)
            raise ValueError(str(exc)) from exc
        fields = {name for _, name, _, _ in string.Formatter().parse(self.key) if name is not None}
        unknown = fields - groups - {"host"}
        if unknown:
            raise ValueError(f"key {self.key!r} uses {sorted(unknown)}; available: host, {', '.join(sorted(groups))}")
        return self

    @property
    def host_pattern(self) -> str:
        return self.host_regex if self.host_regex is not None else _glob_to_regex(self.host or "")


_REDDIT = r"^(?:[a-z0-9-]+\.)*reddit\.com$"

#: Checked in order; the first rule whose host and path both match gives the key.
DEFAULT_RULES: tuple[SourceRule, ...] = (
    # Subreddit names are case-insensitive (r/MachineLearning == r/machinelearning); old./np./m. hosts alike.
    SourceRule(host_regex=_REDDIT, path=r"^/r/(?P<name>[A-Za-z0-9_]+)", key="reddit.com/r/{name}"),
    SourceRule(host_regex=_REDDIT, path=r"^/(?:u|user)/(?P<name>[A-Za-z0-9_-]+)", key="reddit.com/user/{name}"),
    SourceRule(host_regex=_REDDIT, key="reddit.com"),
    # One Stack Exchange site per host; listed before the forum rules so a '/forum/' path cannot split it.
    SourceRule(host="*.stackexchange.com", key="{host}"),
    SourceRule(host_regex=r"^boards\.4chan(?:nel)?\.org$", path=r"^/(?P<board>[a-z0-9]+)/", key="4chan.org/{board}"),
    SourceRule(host="groups.google.com", path=r"^/g/(?P<group>[^/?#]+)", key="groups.google.com/g/{group}"),
    # phpBB: viewforum.php?f=N and viewtopic.php?f=N&t=M share the board id.
    SourceRule(
        host="*", path=r"/view(?:forum|topic)\.php\?(?:[^#]*&)?f=(?P<f>[0-9]+)", key="{host}/viewforum.php?f={f}"
    ),
    # vBulletin 3 (?f=N) and 4 (?N-name, /N-name).
    SourceRule(
        host="*", path=r"/forumdisplay\.php(?:\?(?:[^#]*&)?f=|\?|/)(?P<f>[0-9]+)", key="{host}/forumdisplay.php?f={f}"
    ),
    # SMF: index.php?board=N.0 and index.php/board,N.0.html.
    SourceRule(host="*", path=r"(?:[?&;]board=|/board,)(?P<board>[0-9]+)", key="{host}/index.php?board={board}"),
    # Generic boards: /forum(s)/<board>/... (XenForo's '<slug>.<id>' included); 'index.php' is not a board.
    SourceRule(
        host="*", path=r"^/forums?/(?P<board>[A-Za-z0-9_-]+(?:\.[0-9]+)?)(?:[/?]|$)", key="{host}/forum/{board}"
    ),
    SourceRule(host="*", path=r"^/boards?/(?P<board>[A-Za-z0-9_-]+)(?:[/?]|$)", key="{host}/board/{board}"),
)


class SourceRules(BaseModel):
    """The URL → source-key mapping; URLs no rule matches are keyed by their normalised host.

    ``extra_rules`` are tried before ``rules`` so a pipeline can add a site without copying the defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[SourceRule, ...] = Field(DEFAULT_RULES, description="ordered rules; the first match wins")
    extra_rules: tuple[SourceRule, ...] = Field((), description="site-specific rules tried before 'rules'")


def _render(template: str, host: pa.Array, groups: pa.StructArray | None) -> pa.Array:
    """Fill a key template column-wise (no per-row Python)."""
    parts: list[pa.Array | pa.Scalar] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            parts.append(pa.scalar(literal, pa.string()))
        if name == "host":
            parts.append(host)
        elif name is not None and groups is not None:
            parts.append(pc.struct_field(groups, name))
    if not any(isinstance(p, pa.Array) for p in parts):  # a constant key such as 'reddit.com'
        return pa.array(["".join(p.as_py() for p in parts)] * len(host), pa.string())
    return pc.binary_join_element_wise(*parts, "")


def source_keys(urls: pa.Array | pa.ChunkedArray, rules: SourceRules) -> pa.Array:
    """Source key per URL: the first matching rule's key, else the lowercased host without ``www.``.

    Null for null or unparseable URLs and URLs without a host: such documents belong to no source.
    """
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    urls = urls.cast(pa.string())
    parsed = pc.extract_regex(urls, _URL_PATTERN)
    host = pc.replace_substring_regex(pc.utf8_lower(pc.struct_field(parsed, "host")), _HOST_NOISE, "")
    host = pc.if_else(pc.equal(host, ""), pa.scalar(None, pa.string()), host)
    rest = pc.struct_field(parsed, "rest")

    keys = pa.nulls(len(urls), pa.string())
    for rule in (*rules.extra_rules, *rules.rules):
        match = pc.and_(pc.is_null(keys), pc.match_substring_regex(host, rule.host_pattern))
        groups = None
        if rule.path is not None:
            groups = pc.extract_regex(rest, rule.path)
            match = pc.and_(match, pc.is_valid(groups))
        match = pc.fill_null(match, False)
        if pc.any(match).as_py():
            keys = pc.if_else(match, _render(rule.key, host, groups), keys)
    return pc.utf8_lower(pc.coalesce(keys, host))


def url_hosts(urls: pa.Array) -> pa.Array:
    """The lower-cased host of each URL (null where there is none)."""
    host = pc.extract_regex(urls, r"^[a-zA-Z][\w+.-]*://(?:[^@/?#]*@)?(?P<host>[^:/?#]*)")
    return pc.utf8_lower(pc.struct_field(host, "host"))

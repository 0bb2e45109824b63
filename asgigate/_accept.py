"""Content negotiation for the gateway's own replies: which of JSON, HTML, text and XML the client prefers.

Accept's media ranges are matched the RFC 9110 12.5.1 way: the most specific range that matches a media type
gives its quality; `+json` and `+xml` structured suffixes count as JSON and XML. Ties go to the server's order
(JSON, HTML, text, XML), so `*/*` or no Accept at all gets JSON. An error reply is never refused with 406:
when the client accepts none of the formats, it gets the first one available.
"""

from __future__ import annotations

from collections.abc import Sequence

FORMATS = ("json", "html", "text", "xml")
MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
}
_ACCEPTED = {
    "json": ("application/json", "application/problem+json"),
    "html": ("text/html", "application/xhtml+xml"),
    "text": ("text/plain",),
    "xml": ("application/xml", "text/xml", "application/problem+xml"),
}
_SUFFIX = {"json": "+json", "xml": "+xml"}


def parse_accept(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) per media range; malformed ranges are skipped, a malformed q counts as 1."""
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        kind, slash, subtype = media.partition("/")
        if not slash or not kind or not subtype:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 1.0
        ranges.append((kind, subtype, q))
    return ranges


def quality(fmt: str, ranges: Sequence[tuple[str, str, float]]) -> float:
    """The quality the client gives `fmt`: per media type, the most specific matching range decides."""
    best = 0.0
    for media in _ACCEPTED[fmt]:
        kind, _, subtype = media.partition("/")
        specificity, q = -1, 0.0
        for r_kind, r_subtype, r_q in ranges:
            if r_kind == kind and r_subtype == subtype:
                level = 3
            elif fmt in _SUFFIX and r_kind == "application" and r_subtype.endswith(_SUFFIX[fmt]):
                level = 3
            elif r_kind == kind and r_subtype == "*":
                level = 2
            elif r_kind == "*" and r_subtype == "*":
                level = 1
            else:
                continue
            if level > specificity or (level == specificity and r_q > q):
                specificity, q = level, r_q
        best = max(best, q)
    return best


def negotiate(accept: str, available: Sequence[str]) -> str:
    """The format of `available` (in the server's order of preference) that the Accept header prefers."""
    if not available:
        return "json"
    if not accept:
        return available[0]
    ranges = parse_accept(accept)
    chosen, chosen_q = available[0], 0.0
    for fmt in available:
        q = quality(fmt, ranges)
        if q > chosen_q:
            chosen, chosen_q = fmt, q
    return chosen

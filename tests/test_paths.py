"""Path normalization and templates: `asgigate._paths` called directly, plus the raw-socket security matrix."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgigate import ConfigurationError, Exchange, Forbidden, Gateway, InvalidPath, Policy, Proxy, Route, Upstream
from asgigate._paths import CONVERTORS, MAX_DIGITS, MAX_SHARED_SEGMENT, SEP, PathTemplate, encode, normalize
from asgigate.responses import JSONResponse
from asgigate.testing import BackgroundServer

from servers import raw_get

# --- normalize ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", "/"),
        (b"/users/42", "/users/42"),
        (b"/a/./b", "/a/b"),
        (b"/a/b/../c", "/a/c"),
        (b"/a/%2e/b", "/a/b"),
        (b"/a/%2e%2e/b", "/b"),
        (b"/a/b/.%2E/c", "/a/c"),
        (b"/a/b/%2E./c", "/a/c"),
        (b"/a/b/..", "/a/"),
        (b"/a/.", "/a/"),
        (b"/a/..", "/"),
        (b"/.", "/"),
        (b"//admin", "/admin"),
        (b"/a//b///c", "/a/b/c"),
        (b"/a/b/", "/a/b/"),
        (b"/a//", "/a/"),
        (b"/caf%C3%A9", "/caf\u00e9"),
        (b"/caf\xc3\xa9", "/caf\u00e9"),
        (b"/a%20b", "/a b"),
        (b"/%7Euser", "/~user"),
        (b"/a%2Fb", "/a" + SEP + "Fb"),
        (b"/a%2fb/c", "/a" + SEP + "fb/c"),  # the escape's case is kept (gRPC ** variables give it back as sent)
        (b"/a%2fb%2F%2Fc%252f", "/a" + SEP + "fb" + SEP + "F" + SEP + "Fc%2f"),
        (b"/...", "/..."),
        (b"/a..b/..c", "/a..b/..c"),
    ],
)
def test_normalize(raw: bytes, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"/..", "above the root"),
        (b"/../etc/passwd", "above the root"),
        (b"/a/../..", "above the root"),
        (b"/%2e%2e/x", "above the root"),
        (b"/%2E%2e", "above the root"),
        (b"/a/..%2Fb", "traversal"),
        (b"/a/..%2fb", "traversal"),
        (b"/a/..%5Cb", "traversal"),
        (b"/a/..%5cb", "traversal"),
        (b"/a/b%2F..%2Fc", "traversal"),
        (b"/a/%2e%2e%2Fb", "traversal"),
        (b"/a/.%2Fb", "traversal"),
        (b"/a/x%5C..", "traversal"),
        (b"/a/..\\b", "traversal"),
        (b"/a/b\\..\\c", "traversal"),
        (b"/a%", "percent"),
        (b"/a%2", "percent"),
        (b"/a%zz", "percent"),
        (b"/a%G0/b", "percent"),
        (b"/%C3%28", "UTF-8"),
        (b"/%ff", "UTF-8"),
        (b"/\xff", "UTF-8"),
        (b"/a%00b", "NUL"),
        (b"/%00", "NUL"),
        (b"relative/path", "start with '/'"),
        (b"", "start with '/'"),
        (b"*", "start with '/'"),
    ],
)
def test_normalize_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidPath, match=re.escape(message)) as info:
        normalize(raw)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_path"


def test_raw_nul_byte_is_rejected_like_an_encoded_one() -> None:
    # A raw NUL must never become the in-segment marker for an encoded slash.
    with pytest.raises(InvalidPath):
        normalize(b"/a\x00b")


@pytest.mark.parametrize("raw", [b"/public/..;/admin", b"/a/.;x/b", b"/..;jsessionid=1/x", b"/a/..;%2Fb"])
def test_dot_segments_with_path_parameters_are_rejected(raw: bytes) -> None:
    # Servlet containers strip ";params" from a segment, so "..;" is ".." upstream.
    with pytest.raises(InvalidPath):
        normalize(raw)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/users/42", "/users/42"),
        ("/a b", "/a%20b"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/a" + SEP + "Fb", "/a%2Fb"),
        ("/a?b", "/a%3Fb"),
        ("/a#b", "/a%23b"),
        ("/a%b", "/a%25b"),
        ("/a\tb", "/a%09b"),
        ('/a"b', "/a%22b"),
        ("/a\\b", "/a%5Cb"),
        ("/a;b=c:d@e", "/a;b=c:d@e"),
        ("/~u/!$&'()*+,", "/~u/!$&'()*+,"),
    ],
)
def test_encode_is_canonical(path: str, expected: str) -> None:
    assert encode(path) == expected
    assert normalize(expected.encode("ascii")) == path


# Everything that may appear unencoded in a forwarded path: RFC 3986 pchar plus "/".
_CANONICAL = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*")

_TOKENS = st.sampled_from(
    ["/", "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", "%", "%0", "%00", "%23",
     "#", "?", "%3F", "%20", " ", "a", "b", "admin", "%C3%A9", "\xc3\xa9", "%ff", "\x00", "\t", "~", "%25"]
)
_PATHS = st.one_of(
    st.binary(max_size=40).map(lambda b: b"/" + b),
    st.lists(_TOKENS, max_size=12).map(lambda parts: ("/" + "".join(parts)).encode("latin-1")),
)


@settings(max_examples=600, deadline=None)
@given(_PATHS)
def test_normalize_fuzz(raw: bytes) -> None:
    try:
        path = normalize(raw)
    except InvalidPath:
        return
    assert isinstance(path, str)
    assert path.startswith("/")
    assert "//" not in path
    segments = path.split("/")
    assert "." not in segments
    assert ".." not in segments
    if SEP in path:  # the marker only ever stands for an encoded slash, followed by the escape's letter
        assert b"%2f" in raw.lower()
        assert re.fullmatch("(?:[^\x00]|\x00[Ff])*", path)
        assert path.count(SEP) <= raw.lower().count(b"%2f")
    # The canonical encoding is plain ASCII pchars and round-trips to the same matching form (an encoded slash
    # is always sent upstream as %2F, whichever case the client used).
    encoded = encode(path)
    assert _CANONICAL.fullmatch(encoded), encoded
    assert normalize(encoded.encode("ascii")) == path.replace(SEP + "f", SEP + "F")
    assert encode(normalize(encoded.encode("ascii"))) == encoded


# --- templates ------------------------------------------------------------------------------------------------


def test_template_typed_params() -> None:
    template = PathTemplate("/users/{id:int}/score/{s:float}/doc/{d:uuid}")
    doc = uuid.uuid4()
    raw = template.match(f"/users/7/score/2.5/doc/{doc}")
    assert raw is not None
    assert template.convert(raw) == {"id": 7, "s": 2.5, "d": doc}
    assert raw == {"id": "7", "s": "2.5", "d": str(doc)}
    assert template.match("/users/x/score/2.5/doc/" + str(doc)) is None
    assert template.match("/users/7/score/2.5/doc/not-a-uuid") is None
    assert template.match("/users/7/score/1e5/doc/" + str(doc)) is None


def test_template_str_param_stays_in_its_segment() -> None:
    template = PathTemplate("/files/{name}")
    assert template.match("/files/a/b") is None
    assert template.match("/files/") is None
    matched = template.match(normalize(b"/files/a%2Fb"))
    assert matched is not None
    assert template.convert(matched) == {"name": "a/b"}
    two = PathTemplate("/files/{a}/{b}")
    assert two.match(normalize(b"/files/x%2Fy")) is None
    assert two.match(normalize(b"/files/x/y")) == {"a": "x", "b": "y"}


def test_template_path_param_gives_encoded_slash_back_as_slash() -> None:
    template = PathTemplate("/static/{rest:path}")
    raw = template.match(normalize(b"/static/a/b%2Fc/d"))
    assert raw is not None
    assert template.convert(raw) == {"rest": "a/b/c/d"}
    assert raw == {"rest": "a/b" + SEP + "Fc/d"}
    assert encode("/" + raw["rest"]) == "/a/b%2Fc/d"
    assert template.match("/static/") == {"rest": ""}
    assert template.match("/static") is None


def test_template_static_and_expand() -> None:
    static = PathTemplate("/healthz")
    assert static.static
    assert static.match("/healthz") == {}
    assert static.match("/healthz/") is None
    template = PathTemplate("/v2/users/{id}/files/{rest:path}")
    assert template.expand({"id": "9", "rest": "a" + SEP + "Fb/c"}) == "/v2/users/9/files/a" + SEP + "Fb/c"
    assert repr(template) == "PathTemplate('/v2/users/{id}/files/{rest:path}')"


@pytest.mark.parametrize("kind", sorted(CONVERTORS))
@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_value_a_typed_parameter_admits_converts(kind: str, data: st.DataObject) -> None:
    # Conversion is lazy (on the first read of `exchange.params`), so a value the pattern admits but the
    # converter refuses would be a 500 long after routing: the patterns admit convertible text only.
    pattern, convert = CONVERTORS[kind]
    text = data.draw(st.from_regex(re.compile(pattern, re.DOTALL), fullmatch=True))
    value = convert(text)
    if kind == "float":
        assert math.isfinite(value)


def test_typed_parameters_are_bounded() -> None:
    template = PathTemplate("/n/{i:int}/{f:float}")
    assert template.match(f"/n/{'9' * MAX_DIGITS}/{'9' * MAX_DIGITS}.{'5' * MAX_DIGITS}") is not None
    assert template.match(f"/n/{'9' * (MAX_DIGITS + 1)}/1") is None
    assert template.match(f"/n/1/{'9' * (MAX_DIGITS + 1)}") is None
    assert template.match(f"/n/1/1.{'5' * (MAX_DIGITS + 1)}") is None
    assert template.match("/n/" + "9" * 4301 + "/1") is None


def test_a_trailing_newline_is_part_of_the_last_parameter() -> None:
    # `$` would match before a final newline: "/users/5%0A" must not be user 5
    assert PathTemplate("/users/{id:int}").match(normalize(b"/users/5%0A")) is None
    assert PathTemplate("/users/{id}").match(normalize(b"/users/5%0A")) == {"id": "5\n"}
    assert PathTemplate("/healthz/{x:path}").match("/healthz/\n") == {"x": "\n"}


def _unbounded(template: str) -> re.Pattern[str]:
    """The template as a plain backtracking regex, without the bounds: the reference for what matches."""
    kinds = {"str": r"[^/]+", "int": r"[0-9]+", "float": r"[0-9]+(?:\.[0-9]+)?", "path": r".*"}
    pattern, cursor = "", 0
    for m in re.finditer(r"{(\w+)(?::(\w+))?}", template):
        pattern += re.escape(template[cursor : m.start()]) + f"(?P<{m.group(1)}>{kinds[m.group(2) or 'str']})"
        cursor = m.end()
    return re.compile(pattern + re.escape(template[cursor:]) + r"\Z", re.DOTALL)


SHARED = ["/f/{a}.{b}", "/f/{a}-{b}.json/{c}", "/{a}/{b:int}-{c}", "/x/{a:int}.{b:float}", "/p/{a}.{b}/{rest:path}",
          "/{a}{b:int}/z", "/q/{rest:path}/{a}.{b}"]


@pytest.mark.parametrize("template", SHARED)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(path=st.text("/ab.-1fxpqz", max_size=16))
def test_bounded_matching_splits_paths_as_plain_backtracking_does(template: str, path: str) -> None:
    for prefix in ("", "/f", "/x", "/p", "/q"):
        expected = _unbounded(template).match(prefix + "/" + path)
        assert PathTemplate(template).match(prefix + "/" + path) == (expected.groupdict() if expected else None)


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/files/{name}.{ext}", "/files/" + "." * 50_000 + "/"),  # 10 s and more with plain backtracking
        ("/x/{a}-{b}.json", "/x/" + "-" * 50_000),
        ("/x/{a}-{b}.json/{c}/{d}y", "/x/" + "-" * 250 + ".json/" + "a" * 50_000 + "/" + "b" * 50_000),
        ("/a/{x}/{rest:path}/edit", "/a/b" + "/x" * 50_000),
    ],
)
def test_matching_time_grows_linearly_with_the_path(template: str, path: str) -> None:
    compiled = PathTemplate(template)
    started = time.perf_counter()
    assert compiled.match(path) is None
    assert time.perf_counter() - started < 1.0  # milliseconds in fact; seconds to hours without the bounds


def test_a_segment_with_several_parameters_matches_a_bounded_length() -> None:
    template = PathTemplate("/files/{name}.{ext}")
    assert template.match("/files/" + "a" * (MAX_SHARED_SEGMENT - 4) + ".txt") is not None
    assert template.match("/files/" + "a" * (MAX_SHARED_SEGMENT - 3) + ".txt") is None
    assert PathTemplate("/files/{name}").match("/files/" + "a" * 100_000) is not None


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("users/{id}", "must start with '/'"),
        ("/users/{id:nope}", "Unknown parameter type 'nope'"),
        ("/users/{id}/{id}", "appears twice"),
        ("/users/{id", "Malformed"),
        ("/users/}x{/{id}", "Malformed"),
        ("/d/{a}-{b}-{c}", "more than two str parameters in one segment"),
        ("/d/{a:path}/x/{b:path}", "more than one path parameter"),
    ],
)
def test_template_configuration_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        PathTemplate(template)


# --- security: a real server, raw request targets -------------------------------------------------------------


class DenyAll(Policy):
    async def on_request(self, exchange: Exchange) -> None:
        raise Forbidden("admins only")


async def echo(exchange: Exchange) -> JSONResponse:
    assert exchange.route is not None
    return JSONResponse({"route": exchange.route.name, "path": exchange.path, "params": exchange.params})


class Guarded(Gateway):
    def routes(self) -> list[Route]:
        return [
            Route("/public/{p:path}", echo, name="public"),
            Route("/admin/{p:path}", echo, name="admin", policies=[DenyAll()]),
        ]


@pytest.fixture(scope="module")
def guarded() -> Iterator[BackgroundServer]:
    with BackgroundServer(Guarded(access_log=False)) as server:
        yield server


def body_of(response: bytes) -> Any:
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/public/..%2Fadmin/x", 400),
        ("/public/..%2fadmin/x", 400),
        ("/public/..%5Cadmin/x", 400),
        ("/public/%2e%2e%2Fadmin/x", 400),
        ("/public/..;/admin/x", 400),
        ("/public/x/..%2F..%2Fadmin/x", 400),
        ("/public/%2e%2e/admin/x", 403),
        ("/public/.%2e/admin/x", 403),
        ("/public/%2E./admin/x", 403),
        ("/public/../admin/x", 403),
        ("/public/./../admin/x", 403),
        ("/public/a/../../admin/x", 403),
        ("//admin/x", 403),
        ("///admin//x", 403),
        ("/./admin/x", 403),
        ("/public/../../admin/x", 400),
        ("/%2e%2e/admin/x", 400),
    ],
)
def test_traversal_never_bypasses_the_admin_policy(guarded: BackgroundServer, target: str, status: int) -> None:
    got, response = raw_get(guarded.port, target)
    assert got == status, response
    problem = body_of(response)
    assert problem["status"] == status
    assert problem["code"] == ("forbidden" if status == 403 else "invalid_path")


@pytest.mark.parametrize("target", ["/public/.%2e/admin", "/public/%2e%2e/admin"])
def test_traversal_to_the_admin_root_does_not_reach_public(guarded: BackgroundServer, target: str) -> None:
    status, response = raw_get(guarded.port, target)
    assert status in (400, 403, 404), response
    assert b'"route":"public"' not in response


def test_legitimate_paths_reach_public_with_what_was_matched(guarded: BackgroundServer) -> None:
    status, response = raw_get(guarded.port, "/public/a//b/./c%2Fd/%2e%2e/e")
    assert status == 200, response
    data = body_of(response)
    assert data["route"] == "public"
    assert data["path"] == "/public/a/b/e"
    assert data["params"] == {"p": "a/b/e"}
    status, response = raw_get(guarded.port, "/public/docs%2Fadmin")
    assert status == 200, response
    assert body_of(response)["params"] == {"p": "docs/admin"}
    # Double encoding stays data: the gateway decodes exactly once.
    status, response = raw_get(guarded.port, "/public/%252e%252e/admin/x")
    assert status == 200, response
    assert body_of(response)["params"] == {"p": "%2e%2e/admin/x"}


# --- the forwarded path is the canonical encoding of what was matched -----------------------------------------


class Forwarding(Gateway):
    def __init__(self, upstream_url: str) -> None:
        super().__init__(access_log=False)
        self.backend = Upstream(upstream_url, timeout=5.0)

    def routes(self) -> list[Route]:
        return [Route("/api/{rest:path}", Proxy(self.backend, strip_prefix="/api"))]


@pytest.fixture(scope="module")
def forwarding(upstream: BackgroundServer) -> Iterator[BackgroundServer]:
    with BackgroundServer(Forwarding(upstream.url)) as server:
        yield server


@pytest.mark.parametrize(
    ("target", "raw_path", "path"),
    [
        ("/api/a//b/%2e%2e/c", "/a/c", "/a/c"),
        ("/api/a%2Fb", "/a%2Fb", "/a/b"),
        ("/api/caf%c3%a9", "/caf%C3%A9", "/caf\u00e9"),
        ("/api/%7Eme", "/~me", "/~me"),
        ("/api/a%23b", "/a%23b", "/a#b"),
        ("/api/a%3Fb", "/a%3Fb", "/a?b"),
    ],
)
def test_upstream_sees_the_canonical_path(forwarding: BackgroundServer, target: str, raw_path: str, path: str) -> None:
    status, response = raw_get(forwarding.port, target)
    assert status == 200, response
    data = body_of(response)
    assert data["raw_path"] == raw_path
    assert data["path"] == path

"""HttpRule path templates: the grammar, matching, percent-decoding, specificity; fuzzed with hypothesis."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgigate import ConfigurationError
from asgigate._paths import SEP, normalize
from asgigate.errors import InvalidPath
from asgigate.grpc.httprule import coarse_path, parse_template


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/shelves", "/v1/shelves", {}),
        ("/v1/shelves/{shelf}", "/v1/shelves/7", {("shelf",): "7"}),
        ("/v1/shelves/{shelf.id}", "/v1/shelves/7", {("shelf", "id"): "7"}),
        ("/v1/{name=messages/*}", "/v1/messages/1", {("name",): "messages/1"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", {("name",): "shelves/1/books/2"}),
        ("/v1/{name=shelves/*/books/*}:publish", "/v1/shelves/1/books/2:publish", {("name",): "shelves/1/books/2"}),
        ("/v1/files/{path=**}", "/v1/files/a/b/c", {("path",): "a/b/c"}),
        ("/v1/{a}/x/{b=**}", "/v1/1/x/2/3", {("a",): "1", ("b",): "2/3"}),
        ("/v1/*/items", "/v1/any/items", {}),
        ("/v1/**", "/v1/a/b", {}),
        ("/v1/{name}:verb", "/v1/x:verb", {("name",): "x"}),
        ("/v1/{name}", "/v1/x:notverb", {("name",): "x:notverb"}),
        ("/{a=**}", "/a/b", {("a",): "a/b"}),
    ],
)
def test_templates_match(template: str, path: str, expected: dict[tuple[str, ...], str]) -> None:
    rule = parse_template(template)
    raw = rule.match(path)
    assert raw is not None
    assert rule.values(raw) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/shelves/{shelf}", "/v1/shelves"),
        ("/v1/shelves/{shelf}", "/v1/shelves/1/2"),
        ("/v1/{name=messages/*}", "/v1/messages"),
        ("/v1/{name=messages/*}", "/v1/other/1"),
        ("/v1/{name}:verb", "/v1/x"),
        ("/v1/{name}:verb", "/v1/x:other"),
        ("/v1/shelves", "/v1/shelves/"),
    ],
)
def test_templates_do_not_match(template: str, path: str) -> None:
    assert parse_template(template).match(path) is None


def test_percent_decoding_single_and_multi_segment() -> None:
    path = normalize(b"/v1/a%2Fb%20c/files/x%2Fy/z%41")
    single = parse_template("/v1/{id}/files/{rest=**}")
    values = single.values(single.match(path) or {})
    assert values == {("id",): "a/b c", ("rest",): "x%2Fy/zA"}
    assert SEP not in "".join(values.values())


@pytest.mark.parametrize(
    ("raw", "single", "multi"),
    [
        (b"/v1/a%2fb/files/x%2fy", "a/b", "x%2fy"),
        (b"/v1/a%2Fb/files/x%2Fy", "a/b", "x%2Fy"),
        (b"/v1/a%2f%2Fb/files/x%2F%2fy/%2f/z%2F", "a//b", "x%2F%2fy/%2f/z%2F"),
        (b"/v1/a/files/%2f%20%2F", "a", "%2f %2F"),
    ],
)
def test_multi_segment_variables_keep_encoded_slashes_exactly_as_sent(raw: bytes, single: str, multi: str) -> None:
    # http.proto: a multi-segment variable leaves "%2F" and "%2f" unchanged; a single-segment one decodes them
    rule = parse_template("/v1/{id}/files/{rest=**}")
    values = rule.values(rule.match(normalize(raw)) or {})
    assert values == {("id",): single, ("rest",): multi}
    shaped = parse_template("/v1/{name=shelves/*}")
    assert shaped.values(shaped.match(normalize(b"/v1/shelves/a%2fb%2Fc")) or {}) == {("name",): "shelves/a%2fb%2Fc"}


_TOKENS = st.sampled_from(["a", "Z", "%2f", "%2F", "%20", "%41", "%7e", "%252f", "%3A", "~", ":", "%25"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_TOKENS, min_size=1, max_size=6).map("".join), min_size=1, max_size=4))
def test_fuzz_multi_segment_variables_decode_all_but_encoded_slashes(segments: list[str]) -> None:
    raw = "/".join(segments)
    rule = parse_template("/v1/{id}/{rest=**}")
    values = rule.values(rule.match(normalize(b"/v1/x%2fy/" + raw.encode())) or {})
    # every escape decoded except an encoded slash, which stays exactly as it was written
    expected = re.sub("%(?!2[Ff])([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), raw)
    assert values == {("id",): "x/y", ("rest",): expected}


@pytest.mark.parametrize(
    "template",
    ["", "v1", "/", "/v1/", "/v1//x", "/v1/{", "/v1/{}", "/v1/{a", "/v1/{a=}", "/v1/{a={b}}", "/v1/**/x",
     "/v1/{a}/{a}", "/v1/x:", "/v1/{1a}", "/v1/{a.}", "/v1/x:a/b", "/v1/{a=**}/b", "/v1/a}", "/v1/a=b"],
)
def test_malformed_templates_are_configuration_errors(template: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_template(template)


def test_specificity_order() -> None:
    templates = ["/v1/{path=**}", "/v1/shelves/{shelf}", "/v1/shelves/special", "/v1/{a}/special",
                 "/v1/shelves/{shelf}:verb"]
    ranked = sorted(templates, key=lambda t: parse_template(t).specificity())
    assert ranked == ["/v1/shelves/special", "/v1/shelves/{shelf}:verb", "/v1/shelves/{shelf}",
                      "/v1/{a}/special", "/v1/{path=**}"]


def test_coarse_paths_are_plain_route_paths() -> None:
    assert coarse_path(parse_template("/v1/shelves")) == "/v1/shelves"
    assert coarse_path(parse_template("/v1/shelves:clear")) == "/v1/shelves:clear"
    assert coarse_path(parse_template("/v1/shelves/{s}")) == "/v1/shelves/{_rest:path}"
    assert coarse_path(parse_template("/{a=**}")) == "/{_rest:path}"


_TEMPLATE_CHARS = st.sampled_from(list("/{}=*.:ab1_-%"))


@settings(max_examples=400, deadline=None)
@given(st.text(_TEMPLATE_CHARS, max_size=30))
def test_fuzz_template_parser_raises_only_configuration_errors(text: str) -> None:
    try:
        rule = parse_template(text)
    except ConfigurationError:
        return
    # whatever parses must match its own literal rendering without crashing
    rule.match(text.split(":", 1)[0])


_SEGMENT = st.one_of(st.sampled_from(["*", "**", "v1", "shelves", "{a}", "{b.c}", "{d=x/*}", "{e=**}"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=5), st.binary(max_size=40))
def test_fuzz_matching_never_crashes(segments: list[str], raw_path: bytes) -> None:
    try:
        rule = parse_template("/" + "/".join(segments))
    except ConfigurationError:
        return
    try:
        path = normalize(b"/" + raw_path.replace(b"?", b""))
    except InvalidPath:
        return
    raw = rule.match(path)
    if raw is not None:
        for value in rule.values(raw).values():
            assert SEP not in value


def test_templates_starting_with_a_wildcard_are_routed() -> None:
    import httpx

    from asgigate import Gateway
    from asgigate.grpc import GrpcService
    from asgigate.testing import BackgroundServer

    from grpcbackend import compiled
    from servers import free_port

    class Api(Gateway):
        def routes(self) -> list[GrpcService]:
            return [GrpcService.from_descriptor_set(compiled().descriptor_set, f"grpc://127.0.0.1:{free_port()}",
                                                    services=["wild.v1.Wild"])]

    with BackgroundServer(Api()) as server:
        # routed (the backend is down: 503), not 404
        assert httpx.get(server.url + "/anything/items", timeout=10).status_code == 503
        assert httpx.get(server.url + "/x/things", timeout=10).status_code == 503
        assert httpx.get(server.url + "/x/other", timeout=10).status_code == 404

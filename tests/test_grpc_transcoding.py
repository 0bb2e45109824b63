"""REST-to-gRPC transcoding through the front door: uvicorn serving a gateway, a real grpc.aio backend."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from asgigate import Exchange, Gateway, Group, Policy, RateLimit, ResponseHead, Route
from asgigate.grpc import GrpcService, GrpcUpstream, JsonOptions, MethodSettings
from asgigate.policies.ratelimit import by_header
from asgigate.testing import BackgroundServer

from grpcbackend import GrpcServer, compiled
from servers import free_port

LIBRARY = "library.v1.LibraryService"


@pytest.fixture(scope="module")
def backend() -> Iterator[GrpcServer]:
    with GrpcServer() as server:
        yield server


class Stamp(Policy):
    """Records on every reply that it ran (gateway-wide and group policies both)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers.append("x-policies", self.name)


class LibraryGateway(Gateway):
    def __init__(self, backend_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend_url = backend_url

    def policies(self) -> list[Policy]:
        return [Stamp("gateway")]

    def routes(self) -> list[Route | Group]:
        c = compiled()
        service = GrpcService.from_descriptor_set(
            c.descriptor_set, self.backend_url, services=[LIBRARY], default_bindings=True,
            forward_headers=["authorization", "x-tenant"], policies=[Stamp("service")],
            methods={
                "ListAuthors": MethodSettings(json=JsonOptions(proto_names=True, emit_unpopulated=True)),
                "GetSpecialShelf": MethodSettings(json=JsonOptions(enums_as_ints=True, emit_unpopulated=True)),
                "Search": MethodSettings(error_format="gateway"),
                "Ping": MethodSettings(policies=[RateLimit("2/minute", key=by_header("x-client"))]),
                "EchoMetadata": MethodSettings(timeout=5.0),
            },
        )
        return [
            Route("/healthz", lambda exchange: None, methods=["GET"]),
            service,
            Group("/lenient", [GrpcService.from_descriptor_set(
                c.descriptor_set, self.backend_url, services=[LIBRARY],
                json=JsonOptions(lenient=True, ignore_unknown_query=True), name="lenient")]),
            Route("/openapi.json", service.openapi(title="Library", version="1")),
        ]


@pytest.fixture(scope="module")
def client(backend: GrpcServer) -> Iterator[httpx.Client]:
    with BackgroundServer(LibraryGateway(backend.url)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http


def status_error(response: httpx.Response, http: int, code: int) -> dict[str, Any]:
    assert response.status_code == http, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    return body


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = json.loads(response.json()["requestJson"])
    return data


# --- unary: path, body, query -------------------------------------------------------------------------------


def test_get_with_a_path_variable(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"id": "7", "theme": "shelf 7", "genre": "FICTION"}  # int64 as a string


def test_literal_beats_variable_whatever_the_declaration_order(client: httpx.Client) -> None:
    response = client.get("/v1/shelves/special")
    assert response.json() == {"id": "-1", "theme": "special", "genre": 0}  # enums as ints, unpopulated printed


def test_body_field_and_nested_path_variable(client: httpx.Client) -> None:
    response = client.post("/v1/shelves", json={"theme": "poetry", "genre": "HISTORY"})
    assert response.json() == {"id": "42", "theme": "poetry", "genre": "HISTORY"}
    response = client.patch("/v1/shelves/9?updateMask=theme,genre", json={"theme": "maps"})
    assert response.json() == {"id": "9", "theme": "maps mask=theme,genre"}


def test_json_input_accepts_proto_and_json_names(client: httpx.Client) -> None:
    by_json = client.post("/v1/shelves/1/books/2:publish", json={"force": True})
    assert by_json.json()["title"] == "published force=True"
    response = client.post("/v1/echo", json={"text": "a", "sleep_ms": 0})
    assert echoed(response) == {"text": "a"}
    response = client.post("/v1/echo", json={"text": "a", "sleepMs": 1})
    assert echoed(response) == {"text": "a", "sleep_ms": 1}


def test_multi_segment_variables(client: httpx.Client) -> None:
    assert client.get("/v1/shelves/3/books/4").json()["name"] == "shelves/3/books/4"
    response = client.get("/v1/shelves/3/books", params={"pageSize": 3})
    assert [b["name"] for b in response.json()["books"]] == [f"shelves/3/books/{i}" for i in range(3)]


def test_double_star_and_percent_decoding(client: httpx.Client) -> None:
    assert echoed(client.get("/v1/files/a/b/c.txt")) == {"path": "a/b/c.txt"}
    # multi-segment variables keep %2F; other escapes are decoded
    assert echoed(client.get("/v1/files/a%2Fb/c%20d")) == {"path": "a%2Fb/c d"}
    # a single-segment variable is decoded fully
    response = client.request("REPORT", "/v1/report/x%2Fy%20z")
    assert echoed(response) == {"topic": "x/y z"}
    # ** at the top level is the least specific binding
    assert echoed(client.get("/v1/anything/else")) == {"path": "anything/else"}


def test_encoded_slashes_are_kept_exactly_as_sent_in_multi_segment_variables(client: httpx.Client) -> None:
    # http.proto: a multi-segment variable leaves "%2F" and "%2f" unchanged (and decodes everything else)
    response = client.get("/v1/files/a%2fb/c%2Fd%20e")
    assert response.request.url.raw_path == b"/v1/files/a%2fb/c%2Fd%20e"  # sent exactly so
    assert echoed(response) == {"path": "a%2fb/c%2Fd e"}
    assert echoed(client.get("/v1/x%2f%2Fy/z")) == {"path": "x%2f%2Fy/z"}
    assert client.get("/v1/shelves/1/books/a%2fb").json()["name"] == "shelves/1/books/a%2fb"
    # a single-segment variable is fully decoded, whichever case the escape had
    assert echoed(client.request("REPORT", "/v1/report/x%2fy%2Fz")) == {"topic": "x/y/z"}


def test_a_plus_in_a_query_value_is_a_plus(client: httpx.Client) -> None:
    # http.proto maps query parameters by URL percent-decoding, where "+" is not a space (Envoy keeps it)
    response = client.get("/v1/search?query=a+b%2Bc%20d&tags=x+y&tags=1+1%3D2")
    assert echoed(response) == {"query": "a+b+c d", "tags": ["x+y", "1+1=2"]}


def test_additional_binding(client: httpx.Client) -> None:
    response = client.get("/v1/books", params={"parent": "shelves/9", "pageSize": 1})
    assert response.json() == {"books": [{"name": "shelves/9/books/0"}]}


def test_custom_method(client: httpx.Client) -> None:
    assert echoed(client.request("REPORT", "/v1/report/sales")) == {"topic": "sales"}


def test_query_parameters_of_every_kind(client: httpx.Client) -> None:
    params: list[tuple[str, str]] = [
        ("query", "rust book"), ("tags", "a"), ("tags", "b"), ("genre", "HISTORY"), ("genres", "1"),
        ("genres", "HISTORY"), ("max_id", "9007199254740993"), ("big", "18446744073709551615"),
        ("inPrint", "true"), ("score", "2.5"), ("filter.author", "Ada"), ("filter.pages.min", "10"),
        ("since", "2017-01-15T01:30:15.01Z"), ("within", "1.5s"), ("fields", "a.b,c"), ("limit", "5"),
        ("available", "false"), ("token", base64.urlsafe_b64encode(b"\xfb\xff").decode()), ("ids", "1"),
        ("ids", "2"),
    ]
    # percent-encoded spaces: httpx's `params=` would send "+", which is a plus here (see the query plus tests)
    data = echoed(client.get("/v1/search?" + urlencode(params, quote_via=quote)))
    assert data == {
        "query": "rust book", "tags": ["a", "b"], "genre": "HISTORY", "genres": ["FICTION", "HISTORY"],
        "max_id": "9007199254740993", "big": "18446744073709551615", "in_print": True, "score": 2.5,
        "filter": {"author": "Ada", "pages": {"min": 10}}, "since": "2017-01-15T01:30:15.010Z",
        "within": "1.500s", "fields": "a.b,c", "limit": 5, "available": False,
        "token": base64.b64encode(b"\xfb\xff").decode(), "ids": ["1", "2"],
    }


def test_repeated_body_field_as_json_array(client: httpx.Client) -> None:
    data = echoed(client.post("/v1/books/b1/tags", json=["x", "y"]))
    assert data == {"book": "b1", "tags": ["x", "y"]}


def test_response_body_and_output_options(client: httpx.Client) -> None:
    response = client.get("/v1/authors", params={"count": 2})
    assert response.json() == [{"name": "author 0"}, {"name": "author 1"}]
    assert client.get("/v1/authors").json() == []


def test_default_binding_for_a_method_without_a_rule(client: httpx.Client) -> None:
    response = client.post(f"/{LIBRARY}/Ping", json={"text": "hi"})
    assert response.json() == {"text": "pong hi"}


def test_delete_returns_empty_object(client: httpx.Client) -> None:
    response = client.delete("/v1/shelves/3")
    assert response.status_code == 200
    assert response.json() == {}


# --- strictness and client errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/shelves", {"content": b"{not json"}),
        ("POST", "/v1/shelves", {"json": {"theme": "x", "colour": "red"}}),  # unknown field
        ("POST", "/v1/shelves", {"json": {"genre": "POETRY"}}),  # unknown enum name
        ("POST", "/v1/shelves", {"json": {"id": "12x"}}),
        ("POST", "/v1/echo", {"json": {"sleepMs": 2**40}}),  # out of int32 range
        ("POST", "/v1/echo", {"json": ["not", "an", "object"]}),
        ("GET", "/v1/shelves/abc", {}),  # bad path value for an int64
        ("GET", "/v1/search?genre=POETRY", {}),
        ("GET", "/v1/search?genre=99", {}),
        ("GET", "/v1/search?genre=%C2%B2", {}),  # a digit to str.isdigit, not to int()
        ("GET", "/v1/search?genre=--1", {}),
        ("GET", "/v1/search?genre=" + "9" * 5000, {}),  # past Python's limit for converting integers
        ("GET", "/v1/search?in_print=maybe", {}),
        ("GET", "/v1/search?nope=1", {}),  # unknown query parameter
        ("GET", "/v1/search?filter=1", {}),  # a message given as a value
        ("GET", "/v1/search?query=a&query=b", {}),
        ("GET", "/v1/search?since=yesterday", {}),
        ("GET", "/v1/search?limit=1.5", {}),
        ("POST", "/v1/echo?text=a", {"json": {}}),  # body "*" takes no query parameters
    ],
)
def test_bad_input_is_a_400_in_status_shape(client: httpx.Client, method: str, path: str,
                                            kwargs: dict[str, Any]) -> None:
    # Search uses the gateway's error format; everything else the google.rpc.Status shape
    response = client.request(method, path, **kwargs)
    if path.startswith("/v1/search"):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return
    body = status_error(response, 400, 3)
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][0]["reason"] in ("invalid_body", "bad_request")
    assert body["details"][0]["metadata"]["request_id"] == response.headers["x-request-id"]


def test_lenient_mode_ignores_unknown_fields_and_query(client: httpx.Client) -> None:
    response = client.post("/lenient/v1/shelves", json={"theme": "x", "colour": "red"})
    assert response.json() == {"id": "42", "theme": "x"}
    response = client.get("/lenient/v1/search?nope=1&query=q")
    assert echoed(response) == {"query": "q"}


def test_method_not_allowed_answers_in_the_status_format(client: httpx.Client) -> None:
    # a known path without the method: 405 with Allow, in the service's error format (google.rpc.Status,
    # code 12 UNIMPLEMENTED, as grpc-gateway answers), not the gateway's problem+json
    response = client.put("/v1/shelves/1")
    body = status_error(response, 405, 12)
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD", "PATCH"}
    assert body["message"] == "Method Not Allowed"
    assert body["details"][0]["reason"] == "method_not_allowed"
    # "/v1/{path=**}" has every path under /v1 for GET
    response = client.post("/v1/no/such/thing", json={})
    status_error(response, 405, 12)
    assert response.headers["allow"] == "GET, HEAD"


def test_method_not_allowed_follows_the_methods_own_error_format(client: httpx.Client) -> None:
    # Search has error_format="gateway": the route that has the path decides
    response = client.post("/v1/search")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD"


def test_unknown_path_in_the_services_namespace_is_a_status_404(client: httpx.Client) -> None:
    # the service owns the first segment of its templates ("/v1", and "/library.v1.LibraryService" of its
    # default bindings): an unknown path there is its 404, google.rpc.Status code 5 NOT_FOUND
    body = status_error(client.post(f"/{LIBRARY}/NoSuchMethod", json={}), 404, 5)
    assert body["message"] == "Not Found"
    assert body["details"][0]["reason"] == "no_route"
    # "/lenient" is only an enclosing group's prefix: its service owns "/lenient/v1", not "/lenient"
    response = client.get("/lenient/v2")
    assert (response.status_code, response.headers["content-type"]) == (404, "application/problem+json")


def test_unknown_path_elsewhere_is_the_gateways_404(client: httpx.Client) -> None:
    for path in ("/v2/shelves", "/nothing", "/v1x"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "no_route"


class Claims(Gateway):
    """Services mounted in the ways that decide who answers a path no route matches."""

    def __init__(self, backend_url: str) -> None:
        super().__init__()
        self.backend_url = backend_url

    def routes(self) -> list[Route | Group]:
        descriptors = compiled().descriptor_set
        return [
            Route("/healthz", lambda exchange: None, methods=["GET"]),
            # its own prefix: everything under /form is the service's; and the HTML-form query rule
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY], prefix="/form",
                                            query_plus_as_space=True, name="form"),
            # an explicit choice, under an enclosing group: only /outer/api/v1
            Group("/outer", [GrpcService.from_descriptor_set(
                descriptors, self.backend_url, services=[LIBRARY], prefix="/api", not_found_under=["/v1"],
                name="nested")]),
            # "/" is everything under where the service is mounted
            Group("/whole", [GrpcService.from_descriptor_set(
                descriptors, self.backend_url, services=[LIBRARY], not_found_under=["/"], name="whole")]),
            # nothing: the gateway's 404 everywhere (405s stay the service's)
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY], prefix="/none",
                                            not_found_under=(), name="none"),
            # only for the service's host
            GrpcService.from_descriptor_set(descriptors, self.backend_url, services=[LIBRARY], prefix="/hosted",
                                            host="api.test", name="hosted"),
        ]


@pytest.fixture(scope="module")
def claims(backend: GrpcServer) -> Iterator[httpx.Client]:
    with BackgroundServer(Claims(backend.url)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http


def test_query_plus_as_space_is_the_html_form_rule(claims: httpx.Client) -> None:
    response = claims.get("/form/v1/search?query=a+b%2Bc%20d&tags=x+y&tags=1+1%3D2")
    assert echoed(response) == {"query": "a b+c d", "tags": ["x y", "1 1=2"]}


@pytest.mark.parametrize(
    ("path", "host", "answer"),
    [
        ("/form/nothing", None, "service"),
        ("/form", None, "service"),
        ("/outer/api/v1", None, "service"),  # (every path below it has GET /v1/{path=**}: a 405 there)
        ("/outer/api/v2", None, "gateway"),
        ("/outer/nothing", None, "gateway"),
        ("/whole/anything/at/all", None, "service"),
        ("/whole", None, "service"),
        ("/wholesale", None, "gateway"),
        ("/none/nothing", None, "gateway"),
        ("/hosted/nothing", "api.test", "service"),
        ("/hosted/nothing", "other.test", "gateway"),
        ("/elsewhere", None, "gateway"),
    ],
)
def test_who_answers_a_path_no_route_matches(claims: httpx.Client, path: str, host: str | None,
                                             answer: str) -> None:
    response = claims.post(path, json={}, headers={"host": host} if host else {})
    if answer == "service":
        body = status_error(response, 404, 5)
        assert body["details"][0]["reason"] == "no_route"
    else:
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "no_route"


def test_405_is_the_services_whatever_not_found_under_says(claims: httpx.Client) -> None:
    for path in ("/none/v1/shelves/1", "/outer/api/v1/shelves/1", "/form/v1/shelves/1"):
        status_error(claims.put(path), 405, 12)


def test_not_found_under_is_checked() -> None:
    from asgigate import ConfigurationError

    descriptors = compiled().descriptor_set
    for bad in ("/v1", ["v1"], ["/v1/{x}"], ["/v1/*"]):
        with pytest.raises(ConfigurationError, match="not_found_under"):
            GrpcService.from_descriptor_set(descriptors, "grpc://127.0.0.1:1", services=[LIBRARY],
                                            not_found_under=bad)


# --- backend status -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http"),
    [(3, 400), (4, 504), (5, 404), (6, 409), (7, 403), (8, 429), (9, 400), (10, 409), (11, 400), (12, 501),
     (13, 500), (14, 503), (15, 500), (16, 401), (2, 500), (1, 499)],
)
def test_grpc_status_maps_to_http(client: httpx.Client, code: int, http: int) -> None:
    response = client.post("/v1/fail", json={"code": code, "message": "nope"})
    body = status_error(response, http, code)
    assert body["message"] == "nope"
    assert body["details"] == []


def test_not_found_from_the_backend(client: httpx.Client) -> None:
    body = status_error(client.get("/v1/shelves/5000"), 404, 5)
    assert body["message"] == "shelf 5000 not found"


def test_status_details_are_decoded(client: httpx.Client) -> None:
    response = client.post("/v1/fail", json={"code": 3, "message": "bad title", "withDetails": True})
    body = status_error(response, 400, 3)
    assert body == {
        "code": 3,
        "message": "bad title",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "title", "description": "must not be empty"}]},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TITLE_EMPTY",
             "domain": "library.example.com", "metadata": {"shelf": "1"}},
        ],
    }


def test_detail_types_from_the_descriptors_and_unknown_ones(client: httpx.Client) -> None:
    body = status_error(client.post("/v1/fail", json={"message": "custom details"}), 400, 9)
    assert body["details"] == [
        {"@type": "type.googleapis.com/library.v1.Shelf", "id": "3", "theme": "full"},
        {"@type": "type.googleapis.com/unknown.v1.Thing", "value": "CAE="},
    ]


def test_importing_asgigate_does_not_import_grpc() -> None:
    import subprocess
    import sys

    code = "import sys, asgigate; print('grpc' in sys.modules, 'google.protobuf' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_gateway_error_format_per_route(client: httpx.Client) -> None:
    response = client.get("/v1/search?bad=1")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "bad_request"


# --- metadata and deadlines ---------------------------------------------------------------------------------


def test_metadata_both_ways(client: httpx.Client) -> None:
    response = client.post(
        "/v1/echo",
        json={"text": "hi"},
        headers={"authorization": "Bearer t0k", "x-tenant": "acme", "x-other": "dropped",
                 "grpc-metadata-x-custom": "yes", "grpc-metadata-x-raw-bin": base64.b64encode(b"\x01").decode(),
                 "grpc-metadata-x-request-id": "forged"},
    )
    assert response.status_code == 200
    metadata = response.json()["metadata"]
    assert metadata["authorization"] == "Bearer t0k"
    assert metadata["x-tenant"] == "acme"
    assert metadata["x-custom"] == "yes"
    assert metadata["x-request-id"] == response.headers["x-request-id"]
    assert "x-other" not in metadata
    assert response.headers["grpc-metadata-x-server"] == "initial"
    assert response.headers["grpc-metadata-x-trailer"] == "done"
    assert base64.b64decode(response.headers["grpc-metadata-x-blob-bin"]) == b"\x00\x01"


def test_route_timeout_and_grpc_timeout_header(client: httpx.Client) -> None:
    remaining = client.post("/v1/echo", json={}).json()["deadlineSeconds"]
    assert 3.0 < remaining <= 5.1  # the route's timeout (the server rounds up a little; a busy machine is slow)
    remaining = client.post("/v1/echo", json={}, headers={"grpc-timeout": "2S"}).json()["deadlineSeconds"]
    assert 0.5 < remaining <= 2.1  # the client's shorter one
    remaining = client.post("/v1/echo", json={}, headers={"grpc-timeout": "1H"}).json()["deadlineSeconds"]
    assert remaining <= 5.1  # never longer than the route's


def test_deadline_exceeded_is_504(client: httpx.Client) -> None:
    response = client.post("/v1/echo", json={"sleepMs": 500}, headers={"grpc-timeout": "100m"})
    body = status_error(response, 504, 4)
    assert body["details"][0]["reason"] == "upstream_timeout"


def test_bad_grpc_timeout_is_400(client: httpx.Client) -> None:
    status_error(client.post("/v1/echo", json={}, headers={"grpc-timeout": "soon"}), 400, 3)


def test_bad_binary_metadata_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/echo", json={}, headers={"grpc-metadata-x-raw-bin": "***"})
    status_error(response, 400, 3)


# --- policies -----------------------------------------------------------------------------------------------


def test_policies_apply_to_transcoded_routes(client: httpx.Client) -> None:
    headers = {"x-client": "policy-test"}
    responses = [client.post(f"/{LIBRARY}/Ping", json={"text": str(i)}, headers=headers) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    body = status_error(responses[2], 429, 8)
    assert body["details"][0]["reason"] == "rate_limited"
    assert "retry-after" in responses[2].headers


def test_gateway_and_group_policies_run_on_replies_and_errors(client: httpx.Client) -> None:
    for response in (client.get("/v1/shelves/1"), client.get("/v1/shelves/5000"), client.get("/v1/shelves/x")):
        assert response.headers.get_list("x-policies") == ["service", "gateway"], response.status_code


def test_describe_lists_the_real_templates(backend: GrpcServer) -> None:
    text = LibraryGateway(backend.url).describe()
    assert "GET /v1/{name=shelves/*/books/*}  [library.v1.LibraryService.GetBook]" in text
    assert "REPORT /v1/report/{topic}" in text
    assert "-> GrpcMethod(library.v1.LibraryService.GetBook, 127.0.0.1:" in text
    # who answers the 404s of which paths
    assert "404 under /v1: rendered by the errors of route 'library.v1.LibraryService." in text
    assert "404 under /lenient/v1: rendered by the errors of route 'lenient:library.v1.LibraryService." in text
    text = Claims(backend.url).describe()
    assert "404 under /hosted host=api.test: rendered by" in text
    assert "404 under /none" not in text


# --- the upstream being down ---------------------------------------------------------------------------------


def test_upstream_down_is_503_upstream_unavailable() -> None:
    gateway = LibraryGateway(f"grpc://127.0.0.1:{free_port()}")
    with BackgroundServer(gateway) as server:
        response = httpx.get(server.url + "/v1/shelves/1", timeout=10)
    body = status_error(response, 503, 14)
    assert body["details"][0]["reason"] == "upstream_unavailable"


def test_several_channels_round_robin(backend: GrpcServer) -> None:
    class Pooled(Gateway):
        def routes(self) -> list[Route | Group]:
            upstream = GrpcUpstream(backend.url, channels=3, keepalive=10)
            return [GrpcService.from_descriptor_set(compiled().descriptor_set, upstream, services=[LIBRARY])]

    gateway = Pooled()
    with BackgroundServer(gateway) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for i in range(6):
            assert http.get(f"/v1/shelves/{i}").status_code == 200
        upstream = gateway.upstreams[0]
        assert isinstance(upstream, GrpcUpstream)
        assert len(upstream._channels) == 3


def test_undefined_enum_numbers_are_refused_unless_lenient(client: httpx.Client) -> None:
    status_error(client.post("/v1/shelves", json={"genre": 7}), 400, 3)
    assert client.post("/v1/shelves", json={"genre": 2}).json()["genre"] == "HISTORY"
    assert client.post("/lenient/v1/shelves", json={"genre": 7}).json()["genre"] == 7


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post("/v1/echo", content=b'{"text": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    body = status_error(response, 413, 8)
    assert body["details"][0]["reason"] == "payload_too_large"


def test_head_on_a_get_binding(client: httpx.Client) -> None:
    response = client.head("/v1/shelves/7")
    assert response.status_code == 200
    assert response.content == b""

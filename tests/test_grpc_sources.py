"""Where service definitions come from (descriptor set, generated modules, server reflection), the examples of the
google.api.http documentation, OpenAPI, and the build-time checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import descriptor_pb2

from asgigate import ConfigurationError, Gateway, Group, Route
from asgigate.grpc import Descriptors, GrpcService, GrpcUpstream
from asgigate.testing import BackgroundServer

from grpcbackend import GrpcServer, compiled, self_signed
from servers import free_port

LIBRARY = "library.v1.LibraryService"


@pytest.fixture(scope="module")
def backend() -> Iterator[GrpcServer]:
    with GrpcServer() as server:
        yield server


def serve(routes: list[Route | Group]) -> BackgroundServer:
    class Api(Gateway):
        def routes(self) -> list[Route | Group]:
            return routes

    return BackgroundServer(Api())


# --- sources ------------------------------------------------------------------------------------------------


def test_from_generated_modules(backend: GrpcServer) -> None:
    c = compiled()
    service = GrpcService.from_modules([c.library_pb2], backend.url)
    with serve([service]) as server:
        response = httpx.get(server.url + "/v1/shelves/5", timeout=10)
    assert response.json() == {"id": "5", "theme": "shelf 5", "genre": "FICTION"}


def test_from_reflection(backend: GrpcServer) -> None:
    with pytest.raises(ConfigurationError, match="bound twice"):
        GrpcService.from_reflection(backend.url)  # every service but reflection: two bind the same path
    service = GrpcService.from_reflection(backend.url, services=[LIBRARY])
    assert {method.service for method in service.methods} == {LIBRARY}
    with serve([Group("/api", [service])]) as server:
        response = httpx.get(server.url + "/api/v1/shelves/1/books/2", timeout=10)
        assert response.json()["name"] == "shelves/1/books/2"
        response = httpx.post(server.url + "/api/v1/fail", json={"code": 3, "withDetails": True}, timeout=10)
        assert response.json()["details"][1]["reason"] == "TITLE_EMPTY"


def test_from_reflection_without_a_server_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="No gRPC server answered"):
        GrpcService.from_reflection(f"grpc://127.0.0.1:{free_port()}", reflection_timeout=0.5)


def test_descriptor_set_as_bytes_and_service_choice() -> None:
    data = compiled().descriptor_set.read_bytes()
    service = GrpcService.from_descriptor_set(data, "grpc://127.0.0.1:1", services=["messaging.v1.ByName"])
    assert [route.name for route in service.routes] == ["messaging.v1.ByName.GetMessage"]


def test_descriptor_set_without_imports_is_a_configuration_error() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(compiled().descriptor_set.read_bytes())
    only = descriptor_pb2.FileDescriptorSet(file=[f for f in fds.file if f.name == "library.proto"])
    with pytest.raises(ConfigurationError, match="--include_imports"):
        Descriptors.from_file_descriptor_set(only.SerializeToString())
    with pytest.raises(ConfigurationError, match="Not a FileDescriptorSet"):
        Descriptors.from_file_descriptor_set(b"\xff\xff\xff")
    with pytest.raises(ConfigurationError, match="Cannot read"):
        Descriptors.from_file_descriptor_set("/nonexistent/api.binpb")


def test_unknown_service_and_unknown_method_settings() -> None:
    path = compiled().descriptor_set
    with pytest.raises(ConfigurationError, match=r"No gRPC service 'nope\.Service'"):
        GrpcService.from_descriptor_set(path, "grpc://127.0.0.1:1", services=["nope.Service"])
    from asgigate.grpc import MethodSettings

    with pytest.raises(ConfigurationError, match="NoSuchMethod"):
        GrpcService.from_descriptor_set(path, "grpc://127.0.0.1:1", services=[LIBRARY],
                                        methods={"NoSuchMethod": MethodSettings(timeout=1)})


def test_tls_upstream() -> None:
    key, cert = self_signed()
    with GrpcServer(tls=(key, cert), reflection=False) as backend:
        upstream = GrpcUpstream(backend.url, root_certificates=cert)
        assert upstream.tls
        service = GrpcService.from_descriptor_set(compiled().descriptor_set, upstream, services=[LIBRARY])
        with serve([service]) as server:
            assert httpx.get(server.url + "/v1/shelves/3", timeout=10).json()["id"] == "3"
        # without the right roots the handshake fails: the backend counts as unreachable
        untrusted = GrpcService.from_descriptor_set(compiled().descriptor_set, backend.url, services=[LIBRARY])
        with serve([untrusted]) as server:
            response = httpx.get(server.url + "/v1/shelves/3", timeout=10)
        assert response.status_code == 503
        assert response.json()["details"][0]["reason"] == "upstream_unavailable"


def test_bad_upstream_urls() -> None:
    for url in ("http://127.0.0.1:5", "grpc://127.0.0.1", "grpc://127.0.0.1:5/path"):
        with pytest.raises(ConfigurationError):
            GrpcUpstream(url)


def test_duplicate_bindings_are_a_configuration_error() -> None:
    # ByQuery and Additional both bind GET /v1/messages/{message_id}
    with pytest.raises(ConfigurationError, match="bound twice"):
        GrpcService.from_descriptor_set(compiled().descriptor_set, "grpc://127.0.0.1:1",
                                        services=["messaging.v1.ByQuery", "messaging.v1.Additional"])


# --- the examples of the google.api.http documentation --------------------------------------------------------


@pytest.fixture(scope="module")
def messaging(backend: GrpcServer) -> Iterator[httpx.Client]:
    path = compiled().descriptor_set
    routes: list[Route | Group] = [
        GrpcService.from_descriptor_set(path, backend.url, services=[f"messaging.v1.{name}"],
                                        prefix=f"/{name.lower()}")
        for name in ("ByName", "ByQuery", "BodyField", "BodyStar", "Additional")
    ]
    with serve(routes) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def seen(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = json.loads(response.json()["text"])
    return data


def test_doc_example_multi_segment_variable(messaging: httpx.Client) -> None:
    # GET /v1/messages/123456 -> GetMessage(name: "messages/123456")
    assert seen(messaging.get("/byname/v1/messages/123456")) == {"name": "messages/123456"}


def test_doc_example_query_parameters(messaging: httpx.Client) -> None:
    # GET /v1/messages/123456?revision=2&sub.subfield=foo
    data = seen(messaging.get("/byquery/v1/messages/123456?revision=2&sub.subfield=foo"))
    assert data == {"message_id": "123456", "revision": "2", "sub": {"subfield": "foo"}}


def test_doc_example_body_field(messaging: httpx.Client) -> None:
    # PATCH /v1/messages/123456 { "text": "Hi!" } -> UpdateMessage(message_id: "123456" message { text: "Hi!" })
    data = seen(messaging.patch("/bodyfield/v1/messages/123456", json={"text": "Hi!"}))
    assert data == {"message_id": "123456", "message": {"text": "Hi!"}}


def test_doc_example_body_star(messaging: httpx.Client) -> None:
    # PATCH /v1/messages/123456 { "text": "Hi!" } -> UpdateMessage(message_id: "123456" text: "Hi!")
    data = seen(messaging.patch("/bodystar/v1/messages/123456", json={"text": "Hi!"}))
    assert data == {"message_id": "123456", "text": "Hi!"}


def test_doc_example_additional_bindings(messaging: httpx.Client) -> None:
    assert seen(messaging.get("/additional/v1/messages/123456")) == {"message_id": "123456"}
    data = seen(messaging.get("/additional/v1/users/me/messages/123456"))
    assert data == {"message_id": "123456", "user_id": "me"}


# --- OpenAPI ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(backend: GrpcServer) -> dict[str, Any]:
    service = GrpcService.from_descriptor_set(compiled().descriptor_set, backend.url, services=[LIBRARY],
                                              default_bindings=True)
    with serve([Group("/api", [service]), Route("/docs/openapi.json", service.openapi(title="Library"))]) as server:
        response = httpx.get(server.url + "/docs/openapi.json", timeout=10)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_openapi_document(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"] == "3.1.0"
    assert openapi["info"] == {"title": "Library", "version": "1.0.0"}
    paths = openapi["paths"]
    get_shelf = paths["/api/v1/shelves/{shelf}"]["get"]
    assert get_shelf["operationId"] == "library_v1_LibraryService_GetShelf"
    assert get_shelf["description"] == "Gets one shelf."
    assert get_shelf["parameters"] == [
        {"name": "shelf", "in": "path", "required": True, "schema": {"type": "string", "format": "int64"}}]
    assert get_shelf["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/library.v1.Shelf"}
    assert get_shelf["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("Status")
    assert set(paths["/api/v1/shelves/{shelf}"]) == {"get", "delete"}
    book = paths["/api/v1/{name}"]["get"]["parameters"][0]
    assert book["description"] == "Matches the pattern `shelves/*/books/*`."
    search = {p["name"]: p for p in paths["/api/v1/search"]["get"]["parameters"]}
    assert search["filter.pages.min"]["schema"] == {"type": "integer", "format": "int32"}
    assert search["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert search["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert search["genre"]["schema"]["enum"] == ["GENRE_UNSPECIFIED", "FICTION", "HISTORY"]
    create = paths["/api/v1/shelves"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/library.v1.Shelf"}
    shelf = openapi["components"]["schemas"]["library.v1.Shelf"]
    assert shelf["description"] == "A shelf of books."
    assert shelf["properties"]["id"] == {"type": "string", "format": "int64", "description": "The shelf's id."}
    stream = paths["/api/v1/shelves/{shelf}/books:stream"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in stream
    assert "/api/library.v1.LibraryService/Ping" in paths
    upload = paths["/api/v1/upload"]["post"]["requestBody"]["content"]
    assert "*/*" in upload
    assert openapi["tags"] == [{"name": LIBRARY, "description": "A library of shelves and books."}]
    custom = paths["/api/v1/report/{topic}"]["x-additionalOperations"]["REPORT"]
    assert custom["operationId"] == "library_v1_LibraryService_Report"


def test_openapi_document_is_valid_openapi_3_1(openapi: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(openapi)

"""A real gRPC backend for the transcoding tests: tests/grpc/*.proto compiled with grpcio-tools at test time, and
a grpc.aio server (with server reflection) on a free 127.0.0.1 port in a thread of its own."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format

from asgigate.grpc import compile_protos

from servers import free_port

PROTOS = Path(__file__).resolve().parent / "grpc"
_compiled: SimpleNamespace | None = None
CANCELLED: list[int] = []  # shelves whose StreamBooks call was cancelled (the client went away)


def compiled() -> SimpleNamespace:
    """The generated modules and the descriptor set of tests/grpc/*.proto (compiled once per content)."""
    global _compiled
    if _compiled is None:
        files = sorted(PROTOS.glob("*.proto"))
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        out = Path(tempfile.gettempdir()) / f"asgigate-test-protos-{digest}"
        descriptor_set = out / "descriptors.binpb"
        if not descriptor_set.exists():
            compile_protos(files, out, python=True, grpc_python=True)
        if str(out) not in sys.path:
            sys.path.insert(0, str(out))
        modules = {name: importlib.import_module(name) for name in
                   ("library_pb2", "library_pb2_grpc", "messaging_pb2", "messaging_pb2_grpc")}
        _compiled = SimpleNamespace(descriptor_set=descriptor_set, **modules)
    return _compiled


def as_json(message: Any) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, sort_keys=True, indent=None)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def library_servicer(pb: ModuleType, pb_grpc: ModuleType) -> Any:
    from google.protobuf import empty_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    class Library(pb_grpc.LibraryServiceServicer):  # type: ignore[name-defined,misc]
        def echo(self, request: Any, context: Any, **extra: Any) -> Any:
            return pb.Echo(request_json=as_json(request), metadata=_metadata(context), **extra)

        async def GetShelf(self, request: Any, context: Any) -> Any:
            if request.shelf > 1000:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
            return pb.Shelf(id=request.shelf, theme=f"shelf {request.shelf}", genre=pb.FICTION)

        async def GetSpecialShelf(self, request: Any, context: Any) -> Any:
            return pb.Shelf(id=-1, theme="special")

        async def CreateShelf(self, request: Any, context: Any) -> Any:
            shelf = pb.Shelf()
            shelf.CopyFrom(request.shelf)
            if not shelf.id:
                shelf.id = 42
            return shelf

        async def UpdateShelf(self, request: Any, context: Any) -> Any:
            shelf = pb.Shelf()
            shelf.CopyFrom(request.shelf)
            shelf.theme += f" mask={','.join(request.update_mask.paths)}"
            return shelf

        async def DeleteShelf(self, request: Any, context: Any) -> Any:
            return empty_pb2.Empty()

        async def ListBooks(self, request: Any, context: Any) -> Any:
            parent = request.parent or "shelves/all"
            count = request.page_size or 2
            return pb.ListBooksResponse(books=[pb.Book(name=f"{parent}/books/{i}") for i in range(count)])

        async def GetBook(self, request: Any, context: Any) -> Any:
            return pb.Book(name=request.name, title="A Book", author_name="Ada", pages=100)

        async def PublishBook(self, request: Any, context: Any) -> Any:
            return pb.Book(name=request.name, title=f"published force={request.force}")

        async def GetFile(self, request: Any, context: Any) -> Any:
            return self.echo(request, context)

        async def GetAnything(self, request: Any, context: Any) -> Any:
            return self.echo(request, context)

        async def Search(self, request: Any, context: Any) -> Any:
            return self.echo(request, context)

        async def AddTags(self, request: Any, context: Any) -> Any:
            return self.echo(request, context)

        async def Report(self, request: Any, context: Any) -> Any:
            return self.echo(request, context)

        async def ListAuthors(self, request: Any, context: Any) -> Any:
            authors = [pb.Author(name=f"author {i}") for i in range(request.count)]
            return pb.ListAuthorsResponse(authors=authors, total=len(authors))

        async def EchoMetadata(self, request: Any, context: Any) -> Any:
            await context.send_initial_metadata((("x-server", "initial"), ("x-blob-bin", b"\x00\x01")))
            if request.sleep_ms:
                await asyncio.sleep(request.sleep_ms / 1000)
            context.set_trailing_metadata((("x-trailer", "done"),))
            remaining = context.time_remaining()
            return self.echo(request, context, deadline_seconds=remaining if remaining is not None else -1)

        async def Fail(self, request: Any, context: Any) -> Any:
            if request.message == "custom details":
                status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=request.message)
                status.details.add().Pack(pb.Shelf(id=3, theme="full"))
                status.details.add(type_url="type.googleapis.com/unknown.v1.Thing", value=b"\x08\x01")
                await context.abort_with_status(rpc_status.to_status(status))
            if request.with_details:
                bad = error_details_pb2.BadRequest(field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="title", description="must not be empty")])
                info = error_details_pb2.ErrorInfo(reason="TITLE_EMPTY", domain="library.example.com",
                                                   metadata={"shelf": "1"})
                status = status_pb2.Status(code=request.code or code_pb2.INVALID_ARGUMENT, message=request.message)
                for detail in (bad, info):
                    status.details.add().Pack(detail)
                await context.abort_with_status(rpc_status.to_status(status))
            await context.abort(grpc.StatusCode(_code(request.code)), request.message)

        async def Upload(self, request: Any, context: Any) -> Any:
            return pb.Echo(content_type=request.content_type, data=request.data, metadata=_metadata(context))

        async def UploadNamed(self, request: Any, context: Any) -> Any:
            return pb.Echo(request_json=request.name, content_type=request.file.content_type,
                           data=request.file.data)

        async def Download(self, request: Any, context: Any) -> Any:
            from google.api import httpbody_pb2

            return httpbody_pb2.HttpBody(content_type="text/csv", data=f"name\n{request.name}\n".encode())

        async def StreamBooks(self, request: Any, context: Any) -> Any:
            if request.fail_after < 0:
                await context.abort(grpc.StatusCode(_code(request.fail_code or 13)), "failed before any book")
            try:
                for i in range(request.count):
                    if request.fail_after and i == request.fail_after:
                        await context.abort(grpc.StatusCode(_code(request.fail_code or 13)), f"failed after {i}")
                    yield pb.Book(name=f"shelves/{request.shelf}/books/{i}", pages=i)
                    if request.delay_ms:
                        await asyncio.sleep(request.delay_ms / 1000)
            except asyncio.CancelledError:
                CANCELLED.append(request.shelf)
                raise
            if request.fail_after and request.fail_after >= request.count:
                await context.abort(grpc.StatusCode(_code(request.fail_code or 13)), "failed at the end")

        async def CollectBooks(self, request_iterator: Any, context: Any) -> Any:
            books = [book async for book in request_iterator]
            return pb.ListBooksResponse(books=books, next_page_token=str(len(books)))

        async def Chat(self, request_iterator: Any, context: Any) -> Any:
            async for book in request_iterator:
                yield pb.Book(name=book.name, title=book.title.upper())

        async def Ping(self, request: Any, context: Any) -> Any:
            return pb.PingResponse(text="pong " + request.text)

    return Library()


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value  # type: ignore[no-any-return]
    raise ValueError(number)


def messaging_servicers(pb: ModuleType, pb_grpc: ModuleType) -> list[tuple[Any, Any]]:
    async def reply(self: Any, request: Any, context: Any) -> Any:
        return pb.Message(text=as_json(request))

    out = []
    for service, method in (("ByName", "GetMessage"), ("ByQuery", "GetMessage"), ("BodyField", "UpdateMessage"),
                            ("BodyStar", "UpdateMessage"), ("Additional", "GetMessage")):
        base = getattr(pb_grpc, f"{service}Servicer")
        servicer = type(service, (base,), {method: reply})()
        out.append((servicer, getattr(pb_grpc, f"add_{service}Servicer_to_server")))
    return out


class GrpcServer:
    """The library and messaging services with reflection, on a grpc.aio server in its own thread and loop."""

    def __init__(self, port: int | None = None, *, reflection: bool = True,
                 tls: tuple[bytes, bytes] | None = None) -> None:
        self.port = port or free_port()
        self.reflection = reflection
        self.tls = tls  # (private key, certificate) in PEM
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        c = compiled()
        server = grpc.aio.server()
        c.library_pb2_grpc.add_LibraryServiceServicer_to_server(
            library_servicer(c.library_pb2, c.library_pb2_grpc), server)
        names = [c.library_pb2.DESCRIPTOR.services_by_name["LibraryService"].full_name]
        for servicer, add in messaging_servicers(c.messaging_pb2, c.messaging_pb2_grpc):
            add(servicer, server)
        names += [s.full_name for s in c.messaging_pb2.DESCRIPTOR.services_by_name.values()]
        if self.reflection:
            from grpc_reflection.v1alpha import reflection

            reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        if self.tls is not None:
            server.add_secure_port(self.target, grpc.ssl_server_credentials([self.tls]))
        else:
            server.add_insecure_port(self.target)
        await server.start()
        self.server = server

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    def __enter__(self) -> GrpcServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()  # a loop left open is a ResourceWarning when it is collected


def self_signed() -> tuple[bytes, bytes]:
    """A private key and a self-signed certificate for 127.0.0.1 and localhost, in PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)

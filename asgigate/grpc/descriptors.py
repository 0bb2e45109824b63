"""Service definitions: from a FileDescriptorSet, from generated `_pb2` modules, or from server reflection.

Each source ends in the same `Descriptors`: a descriptor pool, the message classes built from it, the
google.api.http rule of every method and the proto comments (when the set was built with source info).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from ..errors import ConfigurationError

__all__ = ["Descriptors", "compile_protos"]

# Field numbers in descriptor.proto, for source_code_info paths.
_MESSAGE_TYPE, _SERVICE, _METHOD, _FIELD, _ENUM, _ENUM_VALUE = 4, 6, 2, 2, 5, 2


@dataclass(frozen=True)
class Method:
    """One gRPC method with what the transcoder needs to know about it."""

    service: str  # package.Service
    name: str
    descriptor: MethodDescriptor
    input: type[Message]
    output: type[Message]
    rule: Any  # google.api.HttpRule, or None
    client_streaming: bool
    server_streaming: bool

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def path(self) -> str:
        """The gRPC request path, `/package.Service/Method`."""
        return f"/{self.service}/{self.name}"


class Descriptors:
    """A pool of service definitions and the message classes made from it."""

    def __init__(
        self, pool: descriptor_pool.DescriptorPool, files: Sequence[descriptor_pb2.FileDescriptorProto]
    ) -> None:
        self.pool = pool
        self.files = list(files)
        self._comments: dict[str, str] | None = None

    # --- sources ----------------------------------------------------------------------------------------

    @classmethod
    def from_file_descriptor_set(cls, source: str | os.PathLike[str] | bytes) -> Descriptors:
        """A FileDescriptorSet (`protoc --descriptor_set_out=... --include_imports`), as a path or as bytes."""
        if isinstance(source, bytes):
            data = source
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"Cannot read the descriptor set {os.fspath(source)!r}: {exc}") from None
        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(data)
        except DecodeError as exc:
            raise ConfigurationError(f"Not a FileDescriptorSet: {exc}") from None
        return cls.from_file_protos(fds.file)

    @classmethod
    def from_file_protos(cls, protos: Iterable[descriptor_pb2.FileDescriptorProto]) -> Descriptors:
        by_name = {p.name: p for p in protos}
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()

        def add(name: str, trail: tuple[str, ...]) -> None:
            if name in added:
                return
            proto = by_name.get(name)
            if proto is None:
                raise ConfigurationError(
                    f"The descriptor set lacks {name!r} (imported by {trail[-1] if trail else '?'}); build it with "
                    "`protoc --include_imports`."
                )
            for dep in proto.dependency:
                add(dep, (*trail, name))
            try:
                pool.Add(proto)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"Cannot load {name!r} from the descriptor set: {exc}") from None
            added.add(name)

        for name in by_name:
            add(name, ())
        return cls(pool, list(by_name.values()))

    @classmethod
    def from_modules(cls, *modules: ModuleType) -> Descriptors:
        """Already-imported generated modules (`library_pb2`), whose types live in the default pool."""
        files = []
        for module in modules:
            file = getattr(module, "DESCRIPTOR", None)
            if file is None or not hasattr(file, "services_by_name"):
                raise ConfigurationError(f"{module!r} is not a generated _pb2 module (it has no file DESCRIPTOR).")
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            files.append(proto)
        return cls(descriptor_pool.Default(), files)

    @classmethod
    def from_reflection(cls, target: str, *, timeout: float = 10.0, credentials: Any = None) -> Descriptors:
        """Ask a running server's reflection service (blocking: it runs once, when the gateway is built)."""
        import grpc
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        channel = (
            grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
        )
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            database = ProtoReflectionDescriptorDatabase(channel)
            protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}
            pending = [database.FindFileContainingSymbol(name) for name in database.get_services()]
            while pending:
                proto = pending.pop()
                if proto.name in protos:
                    continue
                protos[proto.name] = proto
                pending.extend(database.FindFileByName(dep) for dep in proto.dependency if dep not in protos)
        except grpc.FutureTimeoutError:
            raise ConfigurationError(f"No gRPC server answered at {target} within {timeout}s.") from None
        except grpc.RpcError as exc:
            raise ConfigurationError(f"Server reflection at {target} failed: {exc}") from None
        finally:
            channel.close()
        return cls.from_file_protos(protos.values())

    # --- lookups ----------------------------------------------------------------------------------------

    def service_names(self) -> list[str]:
        names: list[str] = []
        for proto in self.files:
            prefix = f"{proto.package}." if proto.package else ""
            names.extend(prefix + service.name for service in proto.service)
        return names

    def service(self, name: str) -> ServiceDescriptor:
        try:
            return self.pool.FindServiceByName(name)
        except KeyError:
            known = ", ".join(self.service_names()) or "none"
            raise ConfigurationError(f"No gRPC service {name!r} in the descriptors (known: {known}).") from None

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        return message_factory.GetMessageClass(descriptor)

    def methods(self, service_name: str) -> list[Method]:
        service = self.service(service_name)
        rules = self._rules(service)
        out = []
        for method in service.methods:
            out.append(
                Method(
                    service=service.full_name,
                    name=method.name,
                    descriptor=method,
                    input=self.message_class(method.input_type),
                    output=self.message_class(method.output_type),
                    rule=rules.get(method.name),
                    client_streaming=method.client_streaming,
                    server_streaming=method.server_streaming,
                )
            )
        return out

    def _rules(self, service: ServiceDescriptor) -> dict[str, Any]:
        """method name -> HttpRule, read from the file's options (re-parsed so the extension is known)."""
        proto = descriptor_pb2.FileDescriptorProto()
        service.file.CopyToProto(proto)
        rules: dict[str, Any] = {}
        for svc in proto.service:
            if svc.name != service.name:
                continue
            for method in svc.method:
                if not method.HasField("options"):
                    continue
                options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
                if options.HasExtension(annotations_pb2.http):
                    rule = http_pb2.HttpRule()
                    rule.CopyFrom(options.Extensions[annotations_pb2.http])
                    rules[method.name] = rule
        return rules

    def comment(self, full_name: str) -> str:
        """The leading comment of a service, method (`pkg.Svc.Method`), message, field or enum, or ""."""
        if self._comments is None:
            self._comments = _collect_comments(self.files)
        return self._comments.get(full_name, "")

    def __repr__(self) -> str:
        return f"Descriptors({', '.join(self.service_names())})"


def _collect_comments(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    out: dict[str, str] = {}
    for proto in files:
        if not proto.HasField("source_code_info"):
            continue
        texts = {
            tuple(loc.path): loc.leading_comments.strip()
            for loc in proto.source_code_info.location
            if loc.leading_comments.strip()
        }
        if not texts:
            continue
        package = f"{proto.package}." if proto.package else ""
        for s, service in enumerate(proto.service):
            name = package + service.name
            _put(out, name, texts.get((_SERVICE, s)))
            for m, method in enumerate(service.method):
                _put(out, f"{name}.{method.name}", texts.get((_SERVICE, s, _METHOD, m)))

        def messages(items: Any, path: tuple[int, ...], prefix: str, texts: dict[tuple[int, ...], str]) -> None:
            for i, message in enumerate(items):
                here = (*path, i)
                name = prefix + message.name
                _put(out, name, texts.get(here))
                for f, fld in enumerate(message.field):
                    _put(out, f"{name}.{fld.name}", texts.get((*here, _FIELD, f)))
                messages(message.nested_type, (*here, 3), name + ".", texts)
                enums(message.enum_type, (*here, 4), name + ".", texts)

        def enums(items: Any, path: tuple[int, ...], prefix: str, texts: dict[tuple[int, ...], str]) -> None:
            for i, enum in enumerate(items):
                _put(out, prefix + enum.name, texts.get((*path, i)))

        messages(proto.message_type, (_MESSAGE_TYPE,), package, texts)
        enums(proto.enum_type, (_ENUM,), package, texts)
    return out


def _put(out: dict[str, str], key: str, text: str | None) -> None:
    if text:
        out[key] = text


def compile_protos(
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    include: Sequence[str | os.PathLike[str]] = (),
    python: bool = False,
    grpc_python: bool = False,
) -> Path:
    """Compile .proto files with grpcio-tools into `out_dir/descriptors.binpb` (imports and comments included).

    With `python`/`grpc_python`, also generate `_pb2` / `_pb2_grpc` modules there. Needs grpcio-tools (a
    development tool: in production, ship the descriptor set it writes).
    """
    try:
        import grpc_tools
    except ImportError:
        raise ConfigurationError("compile_protos needs grpcio-tools (pip install grpcio-tools).") from None
    import google.api

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "descriptors.binpb"
    includes = [*(os.fspath(i) for i in include), *{str(Path(f).resolve().parent) for f in files}]
    includes.append(str(Path(grpc_tools.__file__).parent / "_proto"))
    includes.append(str(Path(next(iter(google.api.__path__))).parent.parent))
    args = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{i}" for i in includes)]
    args += [f"--descriptor_set_out={target}", "--include_imports", "--include_source_info"]
    if python:
        args.append(f"--python_out={out}")
    if grpc_python:
        args.append(f"--grpc_python_out={out}")
    args += [os.fspath(Path(f).resolve()) for f in files]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigurationError(f"protoc failed: {result.stderr.strip() or result.stdout.strip()}")
    return target

"""REST-to-gRPC transcoding from google.api.http rules (needs the `grpc` extra: grpcio, protobuf, ...).

    from asgigate.grpc import GrpcService

    class Api(Gateway):
        def routes(self):
            return [GrpcService.from_descriptor_set("api.binpb", "grpc://127.0.0.1:50051")]
"""

from ..upstreams.grpc import GrpcUpstream as GrpcUpstream  # its home is asgigate.upstreams; kept importable here
from .descriptors import Descriptors, compile_protos
from .mapping import JsonOptions
from .openapi import openapi_document as openapi_document
from .status import status_reply as status_reply
from .target import GrpcMethod as GrpcMethod
from .target import GrpcService, MethodSettings

__all__ = [
    "Descriptors",
    "GrpcService",
    "JsonOptions",
    "MethodSettings",
    "compile_protos",
]

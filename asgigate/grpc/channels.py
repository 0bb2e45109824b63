"""Kept so that ``from asgigate.grpc.channels import GrpcUpstream`` goes on working: it lives in
`asgigate.upstreams.grpc` now."""

from ..upstreams.grpc import GrpcUpstream

__all__ = ["GrpcUpstream"]

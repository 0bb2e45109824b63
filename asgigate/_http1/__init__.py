"""A small, fast HTTP/1.1 client for the proxy's upstream data path.

asyncio Protocols plus httptools (llhttp) parsing, keep-alive pooling, streaming bodies in both directions
with flow control, and cheap per-connection timers. Private: the proxy is its only user.
"""

from asgigate._http1.pool import ConnectionPool, UpstreamResponse

__all__ = ["ConnectionPool", "UpstreamResponse"]

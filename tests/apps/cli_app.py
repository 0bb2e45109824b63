"""A gateway module for the CLI tests (`python -m asgigate routes apps.cli_app:app`)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from asgigate import Direct, Forbidden, Gateway, Group, Policy, Redirect, Route
from asgigate.exchange import Exchange


class Auth(Policy):
    async def on_request(self, exchange: Exchange) -> None:
        if "authorization" not in exchange.headers:
            raise Forbidden()


class Audit(Policy):
    requires = (Auth,)


class Stamp(Policy):
    def __init__(self, value: str) -> None:
        self.value = value


class CliGateway(Gateway):
    def policies(self) -> list[Policy]:
        return [Auth(), Audit()]

    def middleware(self) -> list[Middleware]:
        return [Middleware(GZipMiddleware, minimum_size=500)]

    def routes(self) -> list[Route | Group]:
        return [
            Route("/healthz", Direct(json={"ok": True}), methods=["GET"], skip={Auth, Audit}),
            Group(
                "/v1",
                [
                    Route("/users/{id:int}", Direct(text="user"), policies=[Stamp("route")]),
                    Route("/old", Redirect("/v1/users/1"), host="*.example.com"),
                ],
                policies=[Stamp("group"), Middleware(GZipMiddleware)],
            ),
        ]


class BrokenGateway(Gateway):
    def routes(self) -> list[Route]:
        return [Route("/audited", Direct(text="x"), policies=[Audit(), Auth()])]


app = CliGateway()
broken = BrokenGateway()
not_gateway: dict[str, list[str]] = {"routes": []}


class Holder:
    gateway = app

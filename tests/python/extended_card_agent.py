"""Test agent (official A2A Python SDK) served over TLS whose extended agent card shows more.

Environment:
- A2A_PORT: the port on 127.0.0.1; TLS_CERT / TLS_KEY: the server certificate and key (PEM).
- SECRET: the bearer token that is shown the extended card.
- PUBLIC_BINDING: `JSONRPC` (default) or `HTTP+JSON`, the one interface of the public card.
  The extended card lists the other binding first, then this one.
- EXTENDED: `on` (default) or `off` (the card declares an extended card, none is configured:
  GetExtendedAgentCard answers ExtendedAgentCardNotConfigured).

The public card (skill `echo`) declares `capabilities.extendedAgentCard` and a bearer scheme;
every operation but GetExtendedAgentCard is open to anyone. GetExtendedAgentCard without the
token gets 401 with a WWW-Authenticate challenge; with it, the extended card (skills `echo` and
`summarize`). JSON-RPC is served at `/`, HTTP+JSON below `/rest`. Each A2A request is logged
as `extended-agent: request binding=B op=OP`, each task as `extended-agent: task=ID`.
"""

import json
import os
import secrets
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState

PORT = int(os.environ["A2A_PORT"])
SECRET = os.environ.get("SECRET", "")
PUBLIC_BINDING = os.environ.get("PUBLIC_BINDING", "JSONRPC")
EXTENDED = os.environ.get("EXTENDED", "on") == "on"
BASE = f"https://127.0.0.1:{PORT}"
URLS = {"JSONRPC": f"{BASE}/", "HTTP+JSON": f"{BASE}/rest"}


def log(text: str) -> None:
    print(f"extended-agent: {text}", file=sys.stderr, flush=True)


class EchoExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        log(f"task={task.id}")
        await updater.add_artifact([new_text_part(f"extended: {context.get_user_input()}")], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


async def operation(request: Request) -> tuple[str, str]:
    """The binding and A2A operation of a request (empty for the public card)."""
    path = request.url.path
    if path.startswith("/rest"):
        return "HTTP+JSON", path[len("/rest") :]
    if path == "/" and request.method == "POST":
        try:
            return "JSONRPC", json.loads(await request.body()).get("method", "")
        except (ValueError, AttributeError):
            return "JSONRPC", ""
    return "", ""


class ExtendedCardNeedsToken(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        binding, op = await operation(request)
        if binding:
            log(f"request binding={binding} op={op}")
        wants_extended = op in ("GetExtendedAgentCard", "/extendedAgentCard")
        token_ok = secrets.compare_digest(request.headers.get("authorization", ""), f"Bearer {SECRET}")
        if wants_extended and not token_ok:
            log("refused the extended card")
            return PlainTextResponse(
                "unauthorized", status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return await call_next(request)


def skill(id: str, text: str) -> AgentSkill:
    return AgentSkill(id=id, name=id.capitalize(), description=text, tags=[id])


def card(interfaces: list[str], skills: list[AgentSkill]) -> AgentCard:
    c = AgentCard(
        name="layered",
        description="Shows callers with the token more skills.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=URLS[b], protocol_binding=b, protocol_version="1.0") for b in interfaces
        ],
        capabilities=AgentCapabilities(streaming=False, extended_agent_card=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=skills,
    )
    c.security_schemes["token"].http_auth_security_scheme.scheme = "Bearer"
    return c


def main() -> None:
    echo = skill("echo", "Echoes.")
    public = card([PUBLIC_BINDING], [echo])
    other = "HTTP+JSON" if PUBLIC_BINDING == "JSONRPC" else "JSONRPC"
    extended = card([other, PUBLIC_BINDING], [echo, skill("summarize", "Summarizes, for known callers.")])
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(),
        task_store=InMemoryTaskStore(),
        agent_card=public,
        extended_agent_card=extended if EXTENDED else None,
    )
    routes = (
        create_agent_card_routes(public)
        + create_jsonrpc_routes(handler, rpc_url="/")
        + create_rest_routes(handler, path_prefix="/rest")
    )
    app = Starlette(routes=routes)
    app.add_middleware(ExtendedCardNeedsToken)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=PORT,
        log_level="warning",
        ssl_certfile=os.environ["TLS_CERT"],
        ssl_keyfile=os.environ["TLS_KEY"],
    )


if __name__ == "__main__":
    main()

"""Test agent (official A2A Python SDK) served over TLS that requires credentials.

Environment:
- A2A_PORT: the port on 127.0.0.1; TLS_CERT / TLS_KEY: the server certificate and key (PEM).
- TLS_CLIENT_CA (optional): require a client certificate signed by this CA (mutual TLS).
- AUTH: `bearer` (Authorization: Bearer $SECRET), `apikey` (X-API-Key: $SECRET), `oauth2`
  (a token issued by this process's own token endpoint at /oauth/token, which takes the
  client id $CLIENT_ID and secret $SECRET by HTTP Basic) or `mtls` (the certificate is enough).

The card is public and declares the scheme; every A2A call without the credential gets 401
with a WWW-Authenticate challenge. Each token issued is logged as `secure-agent: token issued
n=N`, each task as `secure-agent: task=ID`.
"""

import base64
import os
import secrets
import ssl
import sys
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState

PORT = int(os.environ["A2A_PORT"])
AUTH = os.environ.get("AUTH", "bearer")
SECRET = os.environ.get("SECRET", "")
CLIENT_ID = os.environ.get("CLIENT_ID", "")
ISSUED: set[str] = set()


def log(text: str) -> None:
    print(f"secure-agent: {text}", file=sys.stderr, flush=True)


class EchoExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        log(f"task={task.id}")
        await updater.add_artifact([new_text_part(f"secure: {context.get_user_input()}")], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def allowed(request: Request) -> bool:
    authorization = request.headers.get("authorization", "")
    if AUTH == "bearer":
        return secrets.compare_digest(authorization, f"Bearer {SECRET}")
    if AUTH == "apikey":
        return secrets.compare_digest(request.headers.get("x-api-key", ""), SECRET)
    if AUTH == "oauth2":
        return authorization.startswith("Bearer ") and authorization[7:] in ISSUED
    return True


class RequireCredentials(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):
        public = request.url.path in ("/.well-known/agent-card.json", "/oauth/token")
        if public or allowed(request):
            return await call_next(request)
        log(f"refused path={request.url.path}")
        return PlainTextResponse(
            "unauthorized", status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )


async def token_endpoint(request: Request):
    # Parsed by hand: Starlette's form parser needs python-multipart, which the SDK does not pull.
    form = dict(parse_qsl((await request.body()).decode()))
    expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    if form.get("grant_type") != "client_credentials" or not secrets.compare_digest(
        request.headers.get("authorization", ""), expected
    ):
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    token = secrets.token_urlsafe(16)
    ISSUED.add(token)
    log(f"token issued n={len(ISSUED)} scope={form.get('scope', '')}")
    return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})


def card() -> AgentCard:
    c = AgentCard(
        name="secure-echo",
        description="Echoes, over TLS, to callers with the right credentials.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"https://127.0.0.1:{PORT}/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Echoes.", tags=["echo"])],
    )
    scheme = c.security_schemes["credential"]
    if AUTH == "bearer":
        scheme.http_auth_security_scheme.scheme = "Bearer"
    elif AUTH == "apikey":
        scheme.api_key_security_scheme.location = "header"
        scheme.api_key_security_scheme.name = "X-API-Key"
    elif AUTH == "oauth2":
        flow = scheme.oauth2_security_scheme.flows.client_credentials
        flow.token_url = f"https://127.0.0.1:{PORT}/oauth/token"
        flow.scopes["echo"] = "use the echo skill"
    else:
        scheme.mtls_security_scheme.description = "a client certificate of the test CA"
    requirement = c.security_requirements.add()
    requirement.schemes["credential"].list.extend(["echo"] if AUTH == "oauth2" else [])
    return c


def main() -> None:
    agent_card = card()
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=agent_card
    )
    routes = create_agent_card_routes(agent_card) + create_jsonrpc_routes(handler, rpc_url="/")
    routes.append(Route("/oauth/token", token_endpoint, methods=["POST"]))
    app = Starlette(routes=routes)
    app.add_middleware(RequireCredentials)
    client_ca = os.environ.get("TLS_CLIENT_CA")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=PORT,
        log_level="warning",
        ssl_certfile=os.environ["TLS_CERT"],
        ssl_keyfile=os.environ["TLS_KEY"],
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
    )


if __name__ == "__main__":
    main()

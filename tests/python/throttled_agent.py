"""Test agent (official A2A Python SDK) behind an ASGI middleware that logs the arrival of
every SendMessage and answers the first ones with HTTP 429 and a Retry-After, as an LLM
provider's gateway does when a client is over its rate limit.

Listens on 127.0.0.1:$A2A_PORT and serves the binding $BINDING (JSONRPC, the default, or
HTTP+JSON). $THROTTLE_FIRST SendMessage requests (default 0) are answered 429 with
`Retry-After: $RETRY_AFTER` (delta-seconds), or with an HTTP-date that many seconds ahead when
$RETRY_AFTER_FORM is `date`. Each SendMessage is appended to $REQUEST_LOG as
`<unix time> <n> <429|ok>`, written when the request arrives.
"""

import email.utils
import os
import sys
import time

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState

BINDING = os.environ.get("BINDING", "JSONRPC")
THROTTLE_FIRST = int(os.environ.get("THROTTLE_FIRST", "0"))
RETRY_AFTER = int(os.environ.get("RETRY_AFTER", "2"))
DATE_FORM = os.environ.get("RETRY_AFTER_FORM", "seconds") == "date"
LOG = os.environ["REQUEST_LOG"]


class EchoExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.add_artifact([new_text_part(f"echo: {context.get_user_input()}")], name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class Throttle:
    """Pure ASGI: reads the body to see whether it is a SendMessage, then replays it."""

    def __init__(self, app) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        arrived = time.time()
        is_send = scope["path"].endswith("/message:send") or (
            BINDING == "JSONRPC" and b'"SendMessage"' in body
        )
        if is_send:
            self.count += 1
            throttled = self.count <= THROTTLE_FIRST
            with open(LOG, "a") as f:
                f.write(f"{arrived:.6f} {self.count} {'429' if throttled else 'ok'}\n")
            if throttled:
                if DATE_FORM:
                    value = email.utils.formatdate(time.time() + RETRY_AFTER, usegmt=True)
                else:
                    value = str(RETRY_AFTER)
                print(f"throttled-agent: 429 Retry-After: {value}", file=sys.stderr, flush=True)
                await send({
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"retry-after", value.encode()), (b"content-type", b"text/plain")],
                })
                await send({"type": "http.response.body", "body": b"slow down"})
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main() -> None:
    port = int(os.environ["A2A_PORT"])
    path = "/" if BINDING == "JSONRPC" else "/rest"
    card = AgentCard(
        name="python-throttled",
        description="Echoes, after answering the first requests with HTTP 429 (test agent).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"http://127.0.0.1:{port}{path}", protocol_binding=BINDING, protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="Echo", description="Echoes.", tags=["echo"])],
    )
    handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    if BINDING == "JSONRPC":
        routes = create_jsonrpc_routes(handler, rpc_url="/")
    else:
        routes = create_rest_routes(handler, path_prefix="/rest")
    app = Starlette(routes=create_agent_card_routes(card) + routes)
    uvicorn.run(Throttle(app), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

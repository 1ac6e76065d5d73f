"""Test agent (official A2A Python SDK) that calls another agent through the host's gateway.

Every message `AGENT TEXT` (AGENT a name, or a gateway path `namespaces/NS/agents/NAME`) is sent, as a JSON-RPC SendMessage, to
$A2A_GATEWAY_URL/agents/AGENT/ with $A2A_GATEWAY_TOKEN as its bearer token, over TLS verified
by the CA file $A2A_GATEWAY_CA (the only credentials a2a gives it: it never sees the other
agent's own token). The task completes with `relayed: <the other agent's answer text>`, or,
when the gateway refuses, `refused: <HTTP status> <error message>`. Each call is logged to
stderr as `caller-agent: called AGENT status=STATUS`. Serves JSON-RPC on 127.0.0.1:$A2A_PORT.
"""

import os
import ssl
import sys
import uuid

import httpx
import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState


async def call(agent: str, text: str) -> str:
    # `NAME` is an agent of the caller's namespace; a path (`namespaces/NS/agents/NAME`) too.
    path = agent if "/" in agent else f"agents/{agent}"
    url = os.environ["A2A_GATEWAY_URL"].rstrip("/") + f"/{path}/"
    verify = ssl.create_default_context(cafile=os.environ["A2A_GATEWAY_CA"])
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": str(uuid.uuid4()),
                "parts": [{"text": text}],
            }
        },
    }
    headers = {
        "Authorization": f"Bearer {os.environ['A2A_GATEWAY_TOKEN']}",
        "A2A-Version": "1.0",
    }
    async with httpx.AsyncClient(verify=verify, timeout=60) as client:
        resp = await client.post(url, json=body, headers=headers)
    print(f"caller-agent: called {agent} status={resp.status_code}", file=sys.stderr, flush=True)
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except Exception:
            message = resp.text
        return f"refused: {resp.status_code} {message}"
    answer = resp.json()
    if "error" in answer:
        return f"refused: {answer['error'].get('code')} {answer['error'].get('message')}"
    task = answer["result"].get("task", {})
    texts = [p.get("text", "") for a in task.get("artifacts", []) for p in a.get("parts", [])]
    return "relayed: " + " ".join(texts)


class CallerExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        agent, _, text = context.get_user_input().partition(" ")
        try:
            result = await call(agent, text)
        except Exception as e:  # the test reads the reason from the answer
            result = f"refused: {type(e).__name__} {e}"
        await updater.add_artifact([new_text_part(result)], name="relay")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def main() -> None:
    port = int(os.environ.get("A2A_PORT", "8000"))
    card = AgentCard(
        name="gateway-caller",
        description="Calls another agent through the host's A2A gateway.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="relay", name="Relay", description="Calls AGENT with TEXT.", tags=["relay"])],
    )
    handler = DefaultRequestHandler(agent_executor=CallerExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

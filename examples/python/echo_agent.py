"""An A2A 1.0 echo agent written with the official Python SDK (a2a-sdk 1.3).

Serves the agent card at /.well-known/agent-card.json and JSON-RPC at / on
127.0.0.1:$A2A_PORT; the card declares streaming unless $A2A_STREAMING is `0`, and
ListTasks is refused (UnsupportedOperation) when $A2A_LIST_TASKS is `0`.
Install: pip install 'a2a-sdk[http-server]' uvicorn
"""

import os
import sys

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.utils.errors import UnsupportedOperationError
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    TaskState,
)


class EchoExecutor(AgentExecutor):
    """Answers every message with `echo: <text>` as an artifact."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id,
            context.context_id,
            TaskState.TASK_STATE_SUBMITTED,
            history=[context.message],
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        print(
            f"echo-agent: task={task.id} messageId={context.message.message_id}",
            file=sys.stderr,
            flush=True,
        )
        await updater.add_artifact(
            [new_text_part(f"echo: {context.get_user_input()}")], name="echo"
        )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


class NoListHandler(DefaultRequestHandler):
    """Answers ListTasks with UnsupportedOperation, as an agent that does not offer it."""

    async def on_list_tasks(self, params, context):
        raise UnsupportedOperationError(message="ListTasks is not offered")


def main() -> None:
    port = int(os.environ.get("A2A_PORT", "8000"))
    card = AgentCard(
        name="python-echo",
        description="Echoes the message text (official A2A Python SDK).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/",
                protocol_binding="JSONRPC",
                protocol_version="1.0",
            )
        ],
        capabilities=AgentCapabilities(streaming=os.environ.get("A2A_STREAMING", "1") != "0"),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="Echo",
                description="Echoes the message text.",
                tags=["echo"],
                examples=["hello"],
            )
        ],
    )
    lists = os.environ.get("A2A_LIST_TASKS", "1") != "0"
    handler = (DefaultRequestHandler if lists else NoListHandler)(
        agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    app = Starlette(
        routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

"""Test agent (official A2A Python SDK) that answers SendMessage with a task that is not
finished yet (TASK_STATE_WORKING) and completes it later, out of band, as an agent handing
work to a background job would. It does not declare streaming, so clients must poll GetTask.

Listens on 127.0.0.1:$A2A_PORT; the delay before completion is $DEFERRED_SECONDS (default 1).
"""

import asyncio
import os
import sys

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_artifact
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState


DELAY = float(os.environ.get("DEFERRED_SECONDS", "1"))


class DeferredExecutor(AgentExecutor):
    def __init__(self, store: InMemoryTaskStore) -> None:
        self.store = store
        self.background: set[asyncio.Task] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id,
            context.context_id,
            TaskState.TASK_STATE_SUBMITTED,
            history=[context.message],
        )
        await event_queue.enqueue_event(task)
        await TaskUpdater(event_queue, task.id, task.context_id).start_work()
        text = context.get_user_input()
        print(f"deferred-agent: start task={task.id}", file=sys.stderr, flush=True)
        job = asyncio.create_task(self.finish_later(task.id, text, context.call_context))
        self.background.add(job)
        job.add_done_callback(self.background.discard)
        # Returning now leaves the task WORKING: SendMessage answers with it.

    async def finish_later(self, task_id: str, text: str, call_context) -> None:
        await asyncio.sleep(DELAY)
        task = await self.store.get(task_id, call_context)
        if task is None:
            return
        task.artifacts.append(new_text_artifact(name="result", text=f"deferred: {text}"))
        task.status.state = TaskState.TASK_STATE_COMPLETED
        task.status.timestamp.GetCurrentTime()
        await self.store.save(task, call_context)
        print(f"deferred-agent: completed task={task_id}", file=sys.stderr, flush=True)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def main() -> None:
    port = int(os.environ["A2A_PORT"])
    card = AgentCard(
        name="python-deferred",
        description="Answers with a working task and completes it later (test agent).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/",
                protocol_binding="JSONRPC",
                protocol_version="1.0",
            )
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="defer", name="Defer", description="Finishes later.", tags=["async"])],
    )
    store = InMemoryTaskStore()
    handler = DefaultRequestHandler(
        agent_executor=DeferredExecutor(store), task_store=store, agent_card=card
    )
    app = Starlette(
        routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

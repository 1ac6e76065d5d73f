"""Test agent (official A2A Python SDK) that reports the W3C trace context each request
brought: the `traceparent` HTTP header and the `traceparent` key of the message's metadata.
It answers `header=<value> metadata=<value> text=<message text>`.

A message whose text starts with `flaky` fails the first time that text is seen and
succeeds the next time, so a workflow can show a retried attempt.

Listens on 127.0.0.1:$A2A_PORT.
"""

import os

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState


class TraceExecutor(AgentExecutor):
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        headers = {}
        if context.call_context is not None:
            headers = context.call_context.state.get("headers", {}) or {}
        header = next((v for k, v in headers.items() if k.lower() == "traceparent"), "-")
        metadata = "-"
        message = context.message
        if message is not None and message.HasField("metadata") and "traceparent" in message.metadata.fields:
            metadata = message.metadata.fields["traceparent"].string_value
        report = f"header={header} metadata={metadata} text={text}"
        if text.startswith("flaky") and text not in self.seen:
            self.seen.add(text)
            await updater.failed()
            return
        await updater.add_artifact([new_text_part(report)], name="trace")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def main() -> None:
    port = int(os.environ["A2A_PORT"])
    card = AgentCard(
        name="python-trace",
        description="Reports the trace context each request brought (test agent).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="trace", name="Trace", description="Reports traceparent.", tags=["trace"])],
    )
    handler = DefaultRequestHandler(agent_executor=TraceExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    app = Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

"""Test agent (official A2A Python SDK): streams its answer word by word.

`hello big world` -> artifact chunks "HELLO", "BIG", "WORLD" (appended), then COMPLETED.
`slow N` -> works for N seconds (for timeout tests); a CancelTask is logged to stderr as
`streaming-agent: cancel task=<id>` so a test can prove it reached the agent.
`ask QUESTION` -> TASK_STATE_INPUT_REQUIRED with QUESTION as the status message; `login
QUESTION` -> TASK_STATE_AUTH_REQUIRED likewise; the next message on that task (its taskId)
is the answer: `answered: TEXT` completes the task (logged as `answer task=<id> text=TEXT
data=JSON`), its data parts are returned beside it. Each GetTask is logged as `get task=<id>`.
Listens on 127.0.0.1:$A2A_PORT, over the binding named by $A2A_BINDING: `JSONRPC` (the
default) or `HTTP+JSON` (the SDK's REST routes); the card offers only that one. The card
declares streaming unless $A2A_STREAMING is `0`.
"""

import asyncio
import json
import os
import sys

import uvicorn
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState


def log(text: str) -> None:
    print(f"streaming-agent: {text}", file=sys.stderr, flush=True)


class StreamingExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task(
            context.task_id,
            context.context_id,
            TaskState.TASK_STATE_SUBMITTED,
            history=[context.message],
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        if context.current_task is not None and context.current_task.status.state in (
            TaskState.TASK_STATE_INPUT_REQUIRED,
            TaskState.TASK_STATE_AUTH_REQUIRED,
        ):
            data = [MessageToDict(p.data) for p in context.message.parts if p.HasField("data")]
            log(f"answer task={task.id} messageId={context.message.message_id} text={text} data={json.dumps(data)}")
            parts = [new_text_part(f"answered: {text}")] + [
                p for p in context.message.parts if p.HasField("data")
            ]
            await updater.add_artifact(parts, name="answer")
            await updater.complete()
            return
        log(f"start task={task.id} messageId={context.message.message_id}")
        await updater.start_work()
        words = text.split()
        if words[:1] in (["ask"], ["login"]):
            question = updater.new_agent_message([new_text_part(" ".join(words[1:]))])
            if words[0] == "ask":
                await updater.requires_input(question)
            else:
                await updater.requires_auth(question)
            log(f"asked task={task.id}")
            return
        if words[:1] == ["slow"]:
            await asyncio.sleep(float(words[1]) if len(words) > 1 else 30.0)
            words = ["done"]
        artifact_id = f"{task.id}-answer"
        for i, word in enumerate(words):
            await asyncio.sleep(0.05)
            chunk = word.upper()
            await updater.add_artifact(
                [new_text_part(chunk)],
                artifact_id=artifact_id,
                name="answer",
                append=i > 0,
                last_chunk=i == len(words) - 1,
            )
        await updater.complete()
        log(f"end task={task.id}")

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        log(f"cancel task={context.task_id}")
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


class LoggingHandler(DefaultRequestHandler):
    async def on_get_task(self, params, context):
        log(f"get task={params.id}")
        return await super().on_get_task(params, context)


def main() -> None:
    port = int(os.environ["A2A_PORT"])
    binding = os.environ.get("A2A_BINDING", "JSONRPC")
    if binding not in ("JSONRPC", "HTTP+JSON"):
        sys.exit(f"streaming-agent: A2A_BINDING must be JSONRPC or HTTP+JSON, not {binding!r}")
    card = AgentCard(
        name="python-streaming",
        description="Streams its answer in chunks (test agent).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/",
                protocol_binding=binding,
                protocol_version="1.0",
            )
        ],
        capabilities=AgentCapabilities(streaming=os.environ.get("A2A_STREAMING", "1") != "0"),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(id="shout", name="Shout", description="Upper-cases, word by word.", tags=["stream"])
        ],
    )
    handler = LoggingHandler(
        agent_executor=StreamingExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    if binding == "JSONRPC":
        routes = create_jsonrpc_routes(handler, rpc_url="/")
    else:
        routes = create_rest_routes(handler)
    app = Starlette(routes=create_agent_card_routes(card) + routes)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

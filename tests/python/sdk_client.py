"""Talks to an A2A 1.0 agent with the official Python SDK's client and prints what it saw as
one JSON object on stdout. Used to check that `a2a demo-agent` answers the SDK correctly.

usage: sdk_client.py BASE_URL
"""

import asyncio
import json
import sys
import uuid

from google.protobuf.json_format import MessageToDict

from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_artifact_text
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
)


RUN = uuid.uuid4().hex[:8]


def user_message(message_id: str, text: str) -> Message:
    # Unique per run: the demo agent answers a re-sent message id with the task it made.
    return Message(role=Role.ROLE_USER, message_id=f"{message_id}-{RUN}", parts=[Part(text=text)])


def summary(task) -> dict:
    return {
        "id": task.id,
        "state": MessageToDict(task.status).get("state"),
        "text": "\n".join(get_artifact_text(a) for a in task.artifacts),
    }


async def last_task(client, request):
    task = None
    async for event in client.send_message(request):
        if event.HasField("task"):
            task = event.task
    return task


async def main(url: str) -> dict:
    out: dict = {}
    plain = await create_client(url, ClientConfig(streaming=False))
    out["card"] = {
        "name": plain._card.name,
        "skills": [s.id for s in plain._card.skills],
        "streaming": plain._card.capabilities.streaming,
    }

    task = await last_task(
        plain, SendMessageRequest(message=user_message("py-1", "uppercase hello from python"))
    )
    out["send"] = summary(task)
    out["get"] = summary(await plain.get_task(GetTaskRequest(id=task.id)))

    # The streaming path: follow the SSE events to the final status.
    streaming = await create_client(url, ClientConfig(streaming=True))
    events, state, texts = [], None, []
    async for event in streaming.send_message(
        SendMessageRequest(message=user_message("py-2", "wordcount one two three four"))
    ):
        kind = event.WhichOneof("payload") or "?"
        events.append(kind)
        if kind == "task":
            state = MessageToDict(event.task.status).get("state")
        elif kind == "status_update":
            state = MessageToDict(event.status_update.status).get("state")
        elif kind == "artifact_update":
            texts.append(get_artifact_text(event.artifact_update.artifact))
    out["stream"] = {"events": events, "state": state, "text": "\n".join(texts)}

    # Cancel a running task.
    started = await last_task(
        plain,
        SendMessageRequest(
            message=user_message("py-3", "sleep 30s"),
            configuration=SendMessageConfiguration(return_immediately=True),
        ),
    )
    canceled = await plain.cancel_task(CancelTaskRequest(id=started.id))
    out["cancel"] = summary(canceled)

    try:
        await plain.get_task(GetTaskRequest(id="no-such-task"))
        out["missing"] = "no error"
    except Exception as e:  # the SDK maps -32001 to TaskNotFoundError
        out["missing"] = type(e).__name__
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))

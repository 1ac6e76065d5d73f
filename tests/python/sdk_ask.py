"""Drives the `ask` skill of an A2A 1.0 agent through a multi-turn conversation with the
official Python SDK's client, and prints what it saw as one JSON object on stdout.

usage: sdk_ask.py BASE_URL
"""

import asyncio
import json
import sys
import uuid

from google.protobuf.json_format import MessageToDict

from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_artifact_text
from a2a.types import Message, Part, Role, SendMessageRequest


RUN = uuid.uuid4().hex[:8]


async def last_task(client, request):
    task = None
    async for event in client.send_message(request):
        if event.HasField("task"):
            task = event.task
    return task


def state(task) -> str:
    return MessageToDict(task.status).get("state")


async def main(url: str) -> dict:
    out: dict = {}
    client = await create_client(url, ClientConfig(streaming=False))
    first = Message(role=Role.ROLE_USER, message_id=f"ask-1-{RUN}", parts=[Part(text="ask What is your name?")])
    asked = await last_task(client, SendMessageRequest(message=first))
    out["asked"] = {
        "state": state(asked),
        "question": "\n".join(p.text for p in asked.status.message.parts),
    }
    answer = Message(
        role=Role.ROLE_USER,
        message_id=f"ask-2-{RUN}",
        task_id=asked.id,
        context_id=asked.context_id,
        parts=[Part(text="Ada")],
    )
    done = await last_task(client, SendMessageRequest(message=answer))
    out["answered"] = {
        "same_task": done.id == asked.id,
        "state": state(done),
        "answer": "\n".join(get_artifact_text(a) for a in done.artifacts),
        "history": [("\n".join(p.text for p in m.parts)) for m in done.history],
    }
    late = Message(role=Role.ROLE_USER, message_id=f"ask-3-{RUN}", task_id=asked.id, parts=[Part(text="again")])
    try:
        await last_task(client, SendMessageRequest(message=late))
        out["late"] = "no error"
    except Exception as e:  # the SDK maps -32004 to UnsupportedOperationError
        out["late"] = type(e).__name__
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))

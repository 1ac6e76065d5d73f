"""A writing agent backed by a language model, on the official A2A Python SDK.

Skills (the first word of the message picks one, e.g. `research: local-first software`):
  research  notes on a topic
  draft     a short article from notes
  review    reviews a draft; when the draft needs a human decision, the task waits in
            TASK_STATE_INPUT_REQUIRED with the question, and the answer (the next message to
            the same task) finishes the review

The model is any OpenAI-compatible Chat Completions endpoint:
  OPENAI_BASE_URL  e.g. https://api.openai.com/v1, or http://127.0.0.1:11434/v1 (Ollama),
                   or http://127.0.0.1:8080/v1 (llama.cpp's llama-server)
  OPENAI_MODEL     the model name the endpoint knows
  OPENAI_API_KEY   sent as `Authorization: Bearer <key>` (local servers ignore it; may be empty)
  OPENAI_TIMEOUT   seconds one completion may take (default 120)

It serves A2A 1.0 over JSON-RPC and HTTP+JSON on 127.0.0.1:$A2A_PORT (as a2a runs it), and
logs to stderr. Nothing but the completions endpoint is contacted.
"""

import os
import sys

import httpx
import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState

# What each skill asks of the model. The review prompt fixes the shape of the answer, so the
# agent can tell a verdict from a question for the human.
PROMPTS = {
    "research": "You are a researcher. Write concise research notes (facts, open questions, "
    "sources to check) on the topic the user gives.",
    "draft": "You are a writer. Write a short article (at most three paragraphs) from the "
    "research notes the user gives.",
    "review": "You are an editor. Review the draft the user gives. If publishing it needs a "
    "decision only its author can make, answer with one line: 'NEEDS DECISION: ' and the "
    "question. Otherwise answer 'APPROVED' on the first line, then the final text.",
    "decide": "You are an editor. The user gives a draft, the question you asked its author, "
    "and the author's answer. Write the final text, following the answer.",
}
DECISION = "NEEDS DECISION:"


def log(text: str) -> None:
    print(f"llm-agent: {text}", file=sys.stderr, flush=True)


class TaskFailure(Exception):
    """Why a task fails: the message gave nothing to work on, or the completions endpoint
    failed or answered with something that is no completion."""


class ChatModel:
    """One OpenAI-compatible Chat Completions endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(headers=headers, timeout=timeout)

    async def complete(self, system: str, user: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        try:
            resp = await self.http.post(self.url, json=body)
        except httpx.HTTPError as e:
            raise TaskFailure(f"POST {self.url}: {e}") from e
        if resp.status_code != 200:
            raise TaskFailure(f"POST {self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()["choices"][0]["message"]["content"].strip()
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise TaskFailure(f"POST {self.url}: not a chat completion ({e!r}): {resp.text[:300]}") from e


def split_skill(text: str) -> tuple[str, str]:
    """(skill, rest) from `skill: rest`; no known skill word means `research`."""
    first, _, rest = text.strip().partition(" ")
    skill = first.rstrip(":").lower()
    if skill in ("research", "draft", "review"):
        return skill, rest.strip()
    return "research", text.strip()


def message_text(message) -> str:
    return "".join(p.text for p in message.parts if p.HasField("text"))


class WriterExecutor(AgentExecutor):
    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        answering = task is not None and task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        if task is None:
            task = new_task(
                context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message]
            )
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        await updater.start_work()
        try:
            if answering:
                result = await self.decide(task, text)
                skill = "review"
            else:
                skill, rest = split_skill(text)
                if not rest:
                    raise TaskFailure(f"nothing to {skill}: send `{skill}: ...` with the text to work on")
                log(f"start task={task.id} skill={skill}")
                result = await self.model.complete(PROMPTS[skill], rest)
                if skill == "review" and result.startswith(DECISION):
                    question = result[len(DECISION) :].strip() or "How should the draft go on?"
                    await updater.requires_input(updater.new_agent_message([new_text_part(question)]))
                    log(f"asked task={task.id}: {question}")
                    return
                if skill == "review" and result.startswith("APPROVED"):
                    result = result[len("APPROVED") :].strip()
        except TaskFailure as e:
            log(f"failed task={task.id}: {e}")
            await updater.failed(updater.new_agent_message([new_text_part(str(e))]))
            return
        await updater.add_artifact([new_text_part(result)], name=skill)
        await updater.complete()
        log(f"end task={task.id} skill={skill}")

    async def decide(self, task, answer: str) -> str:
        """The final text, from the draft under review, the question asked and the answer."""
        first = message_text(task.history[0]) if task.history else ""
        _, draft = split_skill(first)
        question = message_text(task.status.message) if task.status.HasField("message") else ""
        log(f"answered task={task.id}")
        return await self.model.complete(
            PROMPTS["decide"], f"Draft:\n{draft}\n\nQuestion: {question}\n\nAnswer: {answer}"
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"llm-agent: set {name} (see examples/llm/README.md)")
    return value


def main() -> None:
    port = int(setting("A2A_PORT"))
    try:
        timeout = float(setting("OPENAI_TIMEOUT", "120"))
    except ValueError:
        sys.exit(f"llm-agent: OPENAI_TIMEOUT must be a number of seconds, not {os.environ['OPENAI_TIMEOUT']!r}")
    model = ChatModel(setting("OPENAI_BASE_URL"), setting("OPENAI_MODEL"), setting("OPENAI_API_KEY", ""), timeout)
    url = f"http://127.0.0.1:{port}/"
    card = AgentCard(
        name="llm-writer",
        description=f"Researches, drafts and reviews short articles with {model.model}.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url + "rest", protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(id="research", name="Research", description=PROMPTS["research"], tags=["llm"]),
            AgentSkill(id="draft", name="Draft", description=PROMPTS["draft"], tags=["llm"]),
            AgentSkill(
                id="review",
                name="Review",
                description="Reviews a draft; asks its author (input-required) when it needs a decision.",
                tags=["llm"],
            ),
        ],
    )
    handler = DefaultRequestHandler(agent_executor=WriterExecutor(model), task_store=InMemoryTaskStore(), agent_card=card)
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    app = Starlette(routes=routes + create_rest_routes(handler, path_prefix="/rest"))
    log(f"serving on {url} with model {model.model} at {model.url}")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()

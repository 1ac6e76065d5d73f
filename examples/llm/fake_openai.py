"""A stand-in for an OpenAI-compatible Chat Completions endpoint, for trying the example and
for its tests without a provider: nothing leaves the machine.

    python3 examples/llm/fake_openai.py [--port N] [--record FILE] [--key KEY]

Serves `POST /v1/chat/completions` on 127.0.0.1 (port 0 picks a free one) and prints
`fake-openai: listening on http://127.0.0.1:PORT/v1` on stdout when ready. Answers are
deterministic, made from the request: the model name and the start of the user's message,
under a heading that says which prompt it answered (research notes, a draft, a review). A
review always asks for a decision (`NEEDS DECISION: ...`), so the example's workflow stops
for a human. With `--key`, a request without `Authorization: Bearer KEY` gets 401, as a
provider answers. With `--record`, each request is appended to FILE as one JSON line
(`{"path", "authorization", "body"}`). Only the standard library is used.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(model: str, system: str, user: str) -> str:
    gist = " ".join(user.split())[:80]
    if "researcher" in system:
        return f"Research notes ({model}): three facts about {gist}."
    if "writer" in system:
        return f"Draft ({model}) built from: {gist}"
    if "Review the draft" in system:
        return "NEEDS DECISION: Should the article name the vendors it compares?"
    if "Write the final text" in system:
        decision = " ".join(user.rpartition("Answer:")[2].split())[:80]
        return f"Final text ({model}), as decided: {decision}"
    return f"Answer ({model}): {gist}"


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai/1"

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self.reply(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            return self.reply(400, {"error": {"message": f"the body is not JSON: {e}", "type": "invalid_request_error"}})
        authorization = self.headers.get("Authorization")
        record = self.server.record  # type: ignore[attr-defined]
        if record:
            with self.server.lock, open(record, "a", encoding="utf-8") as f:  # type: ignore[attr-defined]
                f.write(json.dumps({"path": self.path, "authorization": authorization, "body": body}) + "\n")
        key = self.server.key  # type: ignore[attr-defined]
        if key and authorization != f"Bearer {key}":
            return self.reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        messages = body.get("messages") or []
        system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
        user = " ".join(m.get("content", "") for m in messages if m.get("role") == "user")
        model = body.get("model", "")
        if not model or not user:
            return self.reply(400, {"error": {"message": "model and a user message are required", "type": "invalid_request_error"}})
        content = answer(model, system, user)
        self.reply(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len((system + user).split()), "completion_tokens": len(content.split())},
            },
        )

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the http.server API)
        print(f"fake-openai: {self.address_string()} {format % args}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--record", help="append each request to this file, one JSON line each")
    p.add_argument("--key", help="refuse requests without `Authorization: Bearer KEY`")
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.record, server.key, server.lock = args.record, args.key, threading.Lock()  # type: ignore[attr-defined]
    print(f"fake-openai: listening on http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

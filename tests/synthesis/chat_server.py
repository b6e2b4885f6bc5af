"""A real HTTP server on localhost that speaks the OpenAI chat-completions protocol with scripted replies.

`script(request_json, attempt)` returns a `Reply`: HTTP status, body (a chat-completion dict, or raw
text for malformed replies), extra headers and a delay before answering. The server records every
request and the largest number of requests it was answering at once.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent as is
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_s: float = 0.0
    # Replace "{authorization}" in the body with the request's Authorization header, as careless servers
    # and proxies do in their error pages.
    echo_authorization: bool = False


def completion(text: str, prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ChatServer:
    def __init__(self, script: Callable[[dict[str, Any], int], Reply], client_timeout_s: float = float("inf")):
        self.script = script
        # A reply slower than the client's timeout stops counting as in flight when the client gives up.
        self.client_timeout_s = client_timeout_s
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for ACKs

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body["messages"][-1]["content"]
                with server._lock:
                    server.requests.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    attempt = server.attempts.get(key, 0)
                    server.attempts[key] = attempt + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                counted = True
                try:
                    reply = server.script(body, attempt)
                    if reply.delay_s > server.client_timeout_s:
                        time.sleep(server.client_timeout_s)
                        with server._lock:
                            server.in_flight -= 1
                        counted = False
                        time.sleep(reply.delay_s - server.client_timeout_s)
                    else:
                        time.sleep(reply.delay_s)
                    if reply.status == 0:  # drop the connection without answering
                        self.close_connection = True
                        return
                    data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                    if reply.echo_authorization:
                        data = data.replace("{authorization}", self.headers.get("Authorization") or "")
                    data = data.encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    if counted:
                        with server._lock:
                            server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 resets connections under load

            def handle_error(self, request, client_address):
                if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                    return  # a client killed mid-request (the kill tests): nothing to report
                super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""The fake upstream: Debian's nginx serving canned OpenAI-style answers, never the bottleneck.

Two servers in one nginx (one worker process, C, event-driven):

- **fast** (`/v1/chat/completions`, `/v1/embeddings`): canned bodies from files, answered at once.
  nginx refuses POST to static files (405), so `error_page 405 =200 $uri` turns the POST into a
  GET of the same file. `X-Bench-Mode: stream` picks the 30-chunk SSE body instead of the JSON
  one (the proxy forwards every header that is not `X-Lectr-*`).
- **paced** (`/v1/chat/completions`): the echo module writes 30 SSE chunks over 2 s
  (`echo_sleep` between flushed chunks), for the 2,000-concurrent-streams scenario.
- **steady** (`/v1/chat/completions`): 40 SSE chunks 25 ms apart (a 1 s answer at 40 tokens/s),
  for the `paced-floor` scenario (Lectr against a bare trio relay, issue 19).

The SSE bodies are what OpenAI sends when `stream_options.include_usage` is on (the proxy always
asks for it): `"usage":null` on every chunk and a usage-only chunk before `[DONE]`, so the proxy's
stripping path runs exactly as it would in production.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STREAM_CHUNKS = 30
PACED_SECONDS = 2.0
# The `steady` server: 40 content chunks 25 ms apart, then the usage chunk and `[DONE]`.
STEADY_CHUNKS = 40
STEADY_GAP = 0.025
_ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
_CREATED = 1730000000


def chat_json() -> bytes:
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": _CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Benchmarks measure what they measure; this answer is canned so the proxy is.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 25,
            "completion_tokens": 18,
            "total_tokens": 43,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sse_chunks(count: int = STREAM_CHUNKS) -> list[bytes]:
    """`count` content chunks, the usage-only chunk and `[DONE]`, each a complete SSE event."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":' + str(_CREATED)
    head += ',"model":"gpt-4o-mini-2024-07-18",'
    events = []
    for i in range(count):
        delta = '{"role":"assistant","content":""}' if i == 0 else '{"content":" token' + str(i) + '"}'
        finish = '"stop"' if i == count - 1 else "null"
        events.append(
            head
            + '"system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
            + delta
            + ',"logprobs":null,"finish_reason":'
            + finish
            + '}],"usage":null}'
        )
    events.append(
        head + '"system_fingerprint":"fp_bench","choices":[],"usage":{"prompt_tokens":25,'
        f'"completion_tokens":{count - 1},"total_tokens":{count + 24}}}}}'
    )
    return [f"data: {e}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def embeddings_json(dimensions: int = 1536) -> bytes:
    """A text-embedding-3-small sized answer (1,536 floats, ~20 KB), as OpenAI returns it."""
    rng = random.Random(7)
    vector = [round(rng.uniform(-0.1, 0.1), 9) for _ in range(dimensions)]
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _nginx_string(data: bytes) -> str:
    """A single-quoted nginx config string for `echo` (nginx unescapes \\n; no `$` in our data)."""
    text = data.decode()
    assert "$" not in text and "'" not in text
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n") + "'"


def _paced(count: int, gap: float) -> str:
    """nginx echo directives: `count` content chunks flushed `gap` seconds apart, then the usage
    chunk and `[DONE]` at once (as OpenAI sends them)."""
    lines = []
    for i, chunk in enumerate(sse_chunks(count)):
        lines.append(f"            echo -n {_nginx_string(chunk)};")
        lines.append("            echo_flush;")
        if i < count - 1:
            lines.append(f"            echo_sleep {gap:.3f};")
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Upstream:
    """nginx with both servers; `fast_url` / `paced_url` are the `/v1` base URLs."""

    folder: Path
    fast_port: int = 0
    paced_port: int = 0
    steady_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def fast_url(self) -> str:
        return f"http://127.0.0.1:{self.fast_port}/v1"

    @property
    def paced_url(self) -> str:
        return f"http://127.0.0.1:{self.paced_port}/v1"

    @property
    def steady_url(self) -> str:
        return f"http://127.0.0.1:{self.steady_port}/v1"

    def _write_files(self) -> Path:
        files = self.folder / "files"
        files.mkdir(parents=True, exist_ok=True)
        (files / "chat.json").write_bytes(chat_json())
        (files / "chat.sse").write_bytes(b"".join(sse_chunks()))
        (files / "embeddings.json").write_bytes(embeddings_json())
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / "tmp" / name).mkdir(parents=True, exist_ok=True)
        return files

    def _config(self, files: Path) -> str:
        paced_lines = _paced(STREAM_CHUNKS, PACED_SECONDS / (STREAM_CHUNKS - 1))
        steady_lines = _paced(STEADY_CHUNKS, STEADY_GAP)
        tmp = self.folder / "tmp"
        return f"""
load_module {_ECHO_MODULE};
daemon off;
master_process on;
worker_processes 1;
# Fire echo_sleep timers on time: without it the paced streams drift by ~50 ms a chunk at 2,000.
timer_resolution 1ms;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 256k;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    sendfile on;
    tcp_nodelay on;
    etag off;
    server_tokens off;
    types {{ application/json json; text/event-stream sse; }}
    server {{
        listen 127.0.0.1:{self.fast_port} backlog=4096;
        location = /v1/chat/completions {{
            if ($http_x_bench_mode = "stream") {{ rewrite ^ /files/chat.sse last; }}
            rewrite ^ /files/chat.json last;
        }}
        location = /v1/embeddings {{ rewrite ^ /files/embeddings.json last; }}
        location /files/ {{
            internal;
            alias {files}/;
            # POST to a static file is a 405 in nginx; answer it as the GET of the same file.
            error_page 405 =200 $uri;
        }}
    }}
    server {{
        listen 127.0.0.1:{self.paced_port} backlog=4096;
        location = /v1/chat/completions {{
            default_type text/event-stream;
            echo_read_request_body;
{paced_lines}
        }}
    }}
    server {{
        listen 127.0.0.1:{self.steady_port} backlog=4096;
        location = /v1/chat/completions {{
            default_type text/event-stream;
            echo_read_request_body;
{steady_lines}
        }}
    }}
}}
"""

    def start(self) -> Upstream:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise SystemExit("nginx is not installed: apt-get install -y nginx libnginx-mod-http-echo wrk")
        if not _ECHO_MODULE.exists():
            raise SystemExit("nginx's echo module is missing: apt-get install -y libnginx-mod-http-echo")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fast_port, self.paced_port, self.steady_port = free_port(), free_port(), free_port()
        config = self.folder / "nginx.conf"
        config.write_text(self._config(self._write_files()))
        self.process = subprocess.Popen(
            [nginx, "-c", str(config), "-p", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "nginx.stderr", "wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"nginx exited: {(self.folder / 'nginx.stderr').read_text()[-2000:]}")
            try:
                for port in (self.fast_port, self.paced_port, self.steady_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start listening")

    def worker_pids(self) -> list[int]:
        """nginx's worker process(es), to show it is not the bottleneck (CPU seconds)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

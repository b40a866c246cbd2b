"""Server-sent events on the way through: split into events, read usage, strip what we added.

When the client did not ask for `stream_options.include_usage` the proxy asks for it upstream
(so usage is exact) and removes its traces before the client sees them: the usage-only chunk
(`"choices":[]` plus a `usage` object) and the `"usage":null` field added to every other chunk.
The client's stream is then byte for byte what the provider would have sent without us.
When the client asked for usage itself, every byte passes through untouched and we only read.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.accounting.usage import Usage, merge_raw, normalise, raw_usage

_USAGE_NULL = re.compile(rb'\s*,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_DONE = b"[DONE]"
# Events that end a native stream or report an error in it, told apart by how their JSON starts (a
# prefix test in C per event, no regex: chat chunks start with `{"id"` and fail it at once). Both
# APIs send compact JSON with `type` first; the spaced form is accepted as well.
_FINALS = tuple(  # the last event of the native APIs, which end without `[DONE]`
    b'{"type":' + space + b'"' + kind + b'"'
    for kind in (b"message_stop", b"response.completed", b"response.incomplete", b"response.failed")
    for space in (b"", b" ")
)
# Anthropic's `event: error` and the Responses API's `error` event; an error object in a chat chunk.
_ERRORS = (b'{"type":"error"', b'{"type": "error"', b'{"error"')
_NOTABLE = _FINALS + _ERRORS
# An error object, anywhere in such an event (`response.failed` nests it in its response).
_ERROR = re.compile(rb'"type"\s*:\s*"error"|"error"\s*:\s*\{')
_UNPARSED: Any = object()


_USAGE_NULL_TAIL = b',"usage":null}'


def _data(event: bytes) -> bytes | None:
    """The payload of an event's `data:` line(s), or None for comments and keep-alives."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the usual shape: one `data: ` line
    payload = None
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:].lstrip(b" ")
            payload = value if payload is None else payload + b"\n" + value
    return payload


class SSEStream:
    """Feed it upstream chunks; it returns what to forward and remembers what it learnt."""

    __slots__ = (
        "strip",
        "response_model",
        "events",
        "done",
        "error",
        "error_cuts_short",
        "_buffer",
        "_first",
        "_usage",
    )

    def __init__(self, *, strip: bool) -> None:
        self.strip = strip
        self._usage: dict[str, Any] | None = None  # every event's usage, merged (`usage.merge_raw`)
        self.response_model: str | None = None
        self.events = 0  # data events seen (a rough output-token count when usage is missing)
        self.done = False  # the provider's last event (`data: [DONE]`, or one of `_FINALS`) went through
        # The first error the provider reported mid-stream, as `{"error": {...}}` (the shape
        # `redact.error_message` reads), and whether it ended the stream before its usage came
        # (all but `response.failed`, which carries the final usage itself).
        self.error: dict[str, Any] | None = None
        self.error_cuts_short = False
        self._buffer = b""
        self._first = True

    @property
    def usage(self) -> Usage | None:
        """The stream's usage: what all its events said, merged field by field, normalised."""
        return normalise(self._usage) if self._usage is not None else None

    def feed(self, chunk: bytes) -> bytes:
        """Process one upstream chunk; return the bytes to forward to the client now."""
        one = chunk.find(b"\n\n") == len(chunk) - 2 and chunk.endswith(b"\n\n")
        if one and not self._buffer and b"\r" not in chunk:
            # The usual read of a paced stream: exactly one whole event (its first blank line is its
            # end), nothing held over. No split, list or join (docs/PERFORMANCE.md step 18).
            edited = self._event(chunk[:-2])
            if not self.strip:
                return chunk
            return edited + b"\n\n" if edited is not None else b""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer:
            # Providers end events with LF LF: one split in C (only a buffer with a CR needs the
            # search for CRLF CRLF as well, below).
            events = buffer.split(b"\n\n")
            self._buffer = events.pop()
            if not self.strip:
                for event in events:
                    self._event(event)
                return chunk  # pass-through: the chunk goes on untouched (the events were only read)
            forwarded = [edited for event in events if (edited := self._event(event)) is not None]
            return b"\n\n".join(forwarded) + b"\n\n" if forwarded else b""
        out: list[bytes] = []
        start = 0
        boundary = self._boundary
        while True:
            end, gap = boundary(buffer, start)
            if end < 0:
                break
            kept = self._event(buffer[start:end])
            if kept is not None and self.strip:
                out.append(kept + buffer[end : end + gap])
            start = end + gap
        self._buffer = buffer[start:]
        # Pass-through: the chunk goes on untouched (the events were only read).
        return b"".join(out) if self.strip else chunk

    def flush(self) -> bytes:
        """End of stream: whatever trailing bytes are left (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        if not rest:
            return b""
        kept = self._event(rest)
        if not self.strip:
            return b""  # already forwarded by feed()
        return kept if kept is not None else b""

    @staticmethod
    def _boundary(buffer: bytes, start: int) -> tuple[int, int]:
        lf = buffer.find(b"\n\n", start)
        crlf = buffer.find(b"\r\n\r\n", start)
        if crlf >= 0 and (lf < 0 or crlf < lf):
            return crlf, 4
        return (lf, 2) if lf >= 0 else (-1, 0)

    def _event(self, event: bytes) -> bytes | None:
        """Learn from one event; return it (maybe edited) to forward, or None to drop it."""
        if (
            event.endswith(_USAGE_NULL_TAIL)
            and not self._first
            and event.startswith(b"data: ")
            and b"\n" not in event
            and b"x_groq" not in event
        ):
            # The common case, decided in a few C calls: a one-line chunk ending with OpenAI's
            # `,"usage":null}` (every chunk but the last once usage is asked for).
            self.events += 1
            return event[: -len(_USAGE_NULL_TAIL)] + b"}" if self.strip else event
        data = _data(event)
        if data is None:
            return event
        if data == _DONE:
            self.done = True
            return event
        self.events += 1
        body: Any = _UNPARSED
        if self._first:
            self._first = False
            body = self._learn(data, want_model=True)
        if data.startswith(_NOTABLE):
            if data.startswith(_FINALS):
                self.done = True
            if self.error is None and _ERROR.search(data) is not None:
                self._learn_error(_loads(data) if body is _UNPARSED else body)
        if b'"usage"' not in data:
            return event
        if (b'"usage":null' in data or b'"usage": null' in data) and b"x_groq" not in data:
            if not self.strip:
                return event
            if event.endswith(_USAGE_NULL_TAIL):  # OpenAI's placement: the last field
                return event[: -len(_USAGE_NULL_TAIL)] + b"}"
            return _USAGE_NULL.sub(b"", event, count=1)
        body = self._learn(data, want_model=False)
        if self.strip and _EMPTY_CHOICES.search(data) and isinstance(body, dict) and body.get("choices") == []:
            return None  # the usage-only chunk we asked for
        if self.strip:
            return _USAGE_NULL.sub(b"", event, count=1)
        return event

    def _learn(self, data: bytes, *, want_model: bool) -> Any:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if isinstance(body, dict):
            if want_model:
                self.response_model = _model(body)
            found = raw_usage(body)
            if found is not None:
                self._usage = merge_raw(self._usage or {}, found)
        return body

    def _learn_error(self, body: Any) -> None:
        """Remember the first error the provider reported in the stream (see `error`)."""
        if not isinstance(body, dict):
            return
        error = body.get("error")
        response = body.get("response")
        if not isinstance(error, dict) and isinstance(response, dict):
            error = response.get("error")  # `response.failed`
        if not isinstance(error, dict):
            if body.get("type") != "error":
                return
            error = {"type": body.get("code") or "error", "message": body.get("message")}  # Responses' `error`
        self.error = {"error": error}
        self.error_cuts_short = body.get("type") != "response.failed"


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _model(body: dict[str, Any]) -> str | None:
    """The model a stream's first event names: at the top (chat chunks), or in the message
    (Anthropic's `message_start`) or response (the Responses API's `response.created`)."""
    model = body.get("model")
    if isinstance(model, str):
        return model
    for key in ("message", "response"):
        holder = body.get(key)
        if isinstance(holder, dict) and isinstance(holder.get("model"), str):
            return str(holder["model"])
    return None

"""Server-sent events framing (the WHATWG event-stream format OpenAI-compatible APIs stream in):
bytes in, each event's data out. Pure: the remote backend feeds it what the socket gives."""

from __future__ import annotations

DONE = b"[DONE]"


class SSEDecoder:
    """Splits a byte stream into events and returns each event's `data` (lines joined by \\n).
    Comments (`:` lines) and other fields (`event:`, `id:`, `retry:`) are dropped; events with no
    data are skipped. CRLF, CR and LF line ends are all accepted."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # a CR may be the first half of a CRLF still on its way
                buf, keep = buf[:-1], b"\r"
            else:
                keep = b""
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            keep = b""
        lines = buf.split(b"\n")
        self._buf = lines.pop() + keep
        out: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return out

    def close(self) -> list[bytes]:
        """What is left when the stream ends (an event without its closing blank line)."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf, self._data = b"", []
        return out

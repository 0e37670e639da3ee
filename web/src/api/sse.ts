// Server-sent events from a fetch body: the `data:` payloads of each event, in order, until the
// stream ends, `[DONE]` arrives, or the signal aborts (then an AbortError is thrown).

export const DONE = '[DONE]';

/** Splits SSE text into events; feed chunks, get the complete events' data (multi-line data joined by \n). */
export class SseParser {
  private buf = '';

  push(chunk: string): string[] {
    this.buf += chunk;
    const out: string[] = [];
    // events end with a blank line (\n\n, \r\n\r\n or \r\r)
    for (;;) {
      const m = /\r\n\r\n|\n\n|\r\r/.exec(this.buf);
      if (!m) break;
      const block = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      const data = eventData(block);
      if (data !== null) out.push(data);
    }
    return out;
  }

  /** What is left at the end of the stream (an event not closed by a blank line). */
  flush(): string[] {
    const rest = this.buf;
    this.buf = '';
    const data = rest.trim() ? eventData(rest) : null;
    return data === null ? [] : [data];
  }
}

function eventData(block: string): string | null {
  const lines: string[] = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (line.startsWith(':')) continue; // a comment (keep-alive)
    if (line === 'data') lines.push('');
    else if (line.startsWith('data:')) lines.push(line.slice(line.startsWith('data: ') ? 6 : 5));
  }
  return lines.length ? lines.join('\n') : null;
}

function abortError(): Error {
  const e = new Error('The operation was aborted.');
  e.name = 'AbortError';
  return e;
}

/** The data of each event of `body`; stops at `[DONE]` (not yielded). */
export async function* sseData(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<string, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const onAbort = () => {
    void reader.cancel().catch(() => undefined);
  };
  signal?.addEventListener('abort', onAbort);
  try {
    for (;;) {
      if (signal?.aborted) throw abortError();
      const { value, done } = await reader.read();
      if (signal?.aborted) throw abortError();
      const events = done ? [...parser.push(decoder.decode()), ...parser.flush()] : parser.push(decoder.decode(value, { stream: true }));
      for (const data of events) {
        if (data.trim() === DONE) return;
        yield data;
      }
      if (done) return;
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    reader.releaseLock();
  }
}

import { describe, expect, it } from 'vitest';
import type { FetchLike } from './client';
import { ApiError } from './errors';
import { chunkEvents, listModelIds, streamChat, type StreamEvent } from './inference';
import { SseParser, sseData } from './sse';

const enc = new TextEncoder();

/** A body that sends `parts` one by one, then waits (never ends) if `hang`. */
function body(parts: string[], hang = false): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (i < parts.length) ctl.enqueue(enc.encode(parts[i++]));
      else if (!hang) ctl.close();
      else return new Promise(() => undefined);
      return undefined;
    },
  });
}

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function chunk(content: string | null, extra: Record<string, unknown> = {}): string {
  return `data: ${JSON.stringify({ choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: null }], ...extra })}\n\n`;
}

describe('SseParser', () => {
  it('joins events split across chunks and handles CRLF, comments and multi-line data', () => {
    const p = new SseParser();
    expect(p.push('data: {"a"')).toEqual([]);
    expect(p.push(':1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\nevent: ping\ndata:z')).toEqual(['{"a":1}', 'x\ny']);
    expect(p.flush()).toEqual(['z']);
  });
});

describe('sseData', () => {
  it('yields every data payload and stops at [DONE]', async () => {
    const got = await all(sseData(body(['data: 1\n\nda', 'ta: 2\n\ndata: [DONE]\n\ndata: 3\n\n'])));
    expect(got).toEqual(['1', '2']);
  });

  it('ends at the end of the stream without [DONE]', async () => {
    expect(await all(sseData(body(['data: 1\n\ndata: 2'])))).toEqual(['1', '2']);
  });

  it('throws AbortError when the signal aborts mid-stream', async () => {
    const ctl = new AbortController();
    const got: string[] = [];
    const run = (async () => {
      for await (const d of sseData(body(['data: 1\n\n'], true), ctl.signal)) {
        got.push(d);
        setTimeout(() => ctl.abort(), 5);
      }
    })();
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(got).toEqual(['1']);
  });
});

describe('streamChat', () => {
  it('posts a streaming request with the API key and yields deltas then usage', async () => {
    let seen: { url: string; init: RequestInit } | undefined;
    const fetch: FetchLike = async (url, init = {}) => {
      seen = { url, init };
      return new Response(
        body([
          chunk('Hel'),
          chunk('lo'),
          `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`,
          `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } })}\n\n`,
          'data: [DONE]\n\n',
        ]),
        { status: 200, headers: { 'content-type': 'text/event-stream' } },
      );
    };
    const events = await all(streamChat('upl-key', 'echo', [{ role: 'user', content: 'hi' }], undefined, fetch));
    expect(events).toEqual<StreamEvent[]>([
      { kind: 'delta', text: 'Hel' },
      { kind: 'delta', text: 'lo' },
      { kind: 'finish', reason: 'stop' },
      { kind: 'usage', usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 } },
    ]);
    expect(seen?.url).toBe('/v1/chat/completions');
    expect((seen?.init.headers as Record<string, string>).authorization).toBe('Bearer upl-key');
    expect(JSON.parse(String(seen?.init.body))).toEqual({
      model: 'echo',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('reads the error JSON of a refused request (429, 401, 503)', async () => {
    for (const [status, code] of [
      [429, 'rate_limit_exceeded'],
      [401, 'invalid_api_key'],
      [503, 'model_unavailable'],
    ] as const) {
      const fetch: FetchLike = async () =>
        new Response(JSON.stringify({ error: { message: `m${status}`, type: 't', code } }), { status });
      const err = await all(streamChat('k', 'echo', [], undefined, fetch)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status, code, message: `m${status}` });
    }
  });

  it('stops reading when aborted', async () => {
    const ctl = new AbortController();
    const fetch: FetchLike = async () => new Response(body([chunk('a')], true), { status: 200 });
    const got: StreamEvent[] = [];
    const run = (async () => {
      for await (const ev of streamChat('k', 'echo', [], ctl.signal, fetch)) {
        got.push(ev);
        ctl.abort();
      }
    })();
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(got).toEqual([{ kind: 'delta', text: 'a' }]);
  });

  it('raises an error sent inside the stream', () => {
    expect(() => chunkEvents(JSON.stringify({ error: { message: 'worker died', type: 'api_error' } }))).toThrow('worker died');
    expect(chunkEvents('not json')).toEqual([]);
  });

  it('lists model ids for the picker', async () => {
    const fetch: FetchLike = async () => new Response(JSON.stringify({ object: 'list', data: [{ id: 'zeta' }, { id: 'echo' }] }));
    expect(await listModelIds('k', fetch)).toEqual(['echo', 'zeta']);
  });
});

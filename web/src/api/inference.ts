// The OpenAI-compatible inference API (/v1/...), called with an inference API key (never the
// session token): the model list and streamed chat completions.

import { ApiError, errorFromBody } from './errors';
import { sseData } from './sse';
import type { FetchLike } from './client';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export type StreamEvent = { kind: 'delta'; text: string } | { kind: 'usage'; usage: Usage } | { kind: 'finish'; reason: string };

function headers(apiKey: string): Record<string, string> {
  return { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json', accept: 'application/json' };
}

async function failed(res: Response): Promise<ApiError> {
  return errorFromBody(res.status, await res.text().catch(() => ''), res.statusText);
}

async function send(fetchImpl: FetchLike, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetchImpl(url, init);
  } catch (e) {
    if ((e as Error)?.name === 'AbortError') throw e;
    throw new ApiError(0, (e as Error)?.message || 'network error', 'network_error', 'network_error');
  }
}

export async function listModelIds(apiKey: string, fetchImpl: FetchLike = (i, o) => fetch(i, o)): Promise<string[]> {
  const res = await send(fetchImpl, '/v1/models', { headers: headers(apiKey) });
  if (!res.ok) throw await failed(res);
  const body = (await res.json()) as { data?: { id?: unknown }[] };
  return (body.data ?? []).map((m) => String(m.id ?? '')).filter(Boolean).sort();
}

/** One chunk's events: text deltas, a finish reason, the usage (sent with include_usage, last). */
export function chunkEvents(data: string): StreamEvent[] {
  let chunk: unknown;
  try {
    chunk = JSON.parse(data);
  } catch {
    return [];
  }
  const c = chunk as {
    error?: { message?: string; type?: string; code?: string };
    choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
    usage?: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number } | null;
  };
  if (c.error) throw new ApiError(500, c.error.message ?? 'the stream failed', c.error.type ?? '', c.error.code ?? '');
  const out: StreamEvent[] = [];
  for (const choice of c.choices ?? []) {
    const text = choice.delta?.content;
    if (text) out.push({ kind: 'delta', text });
    if (choice.finish_reason) out.push({ kind: 'finish', reason: choice.finish_reason });
  }
  if (c.usage) {
    const p = Number(c.usage.prompt_tokens ?? 0);
    const k = Number(c.usage.completion_tokens ?? 0);
    out.push({ kind: 'usage', usage: { promptTokens: p, completionTokens: k, totalTokens: Number(c.usage.total_tokens ?? p + k) } });
  }
  return out;
}

/** A streamed chat completion's events; abort `signal` to stop (the fetch and the reading end). */
export async function* streamChat(
  apiKey: string,
  model: string,
  messages: ChatMessage[],
  signal?: AbortSignal,
  fetchImpl: FetchLike = (i, o) => fetch(i, o),
): AsyncGenerator<StreamEvent, void, undefined> {
  const res = await send(fetchImpl, '/v1/chat/completions', {
    method: 'POST',
    headers: { ...headers(apiKey), accept: 'text/event-stream' },
    body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!res.ok) throw await failed(res);
  if (!res.body) throw new ApiError(res.status, 'the response has no body', 'api_error');
  for await (const data of sseData(res.body, signal)) {
    yield* chunkEvents(data);
  }
}

import { describe, expect, it, vi } from 'vitest';
import { AdminClient, type FetchLike, collectAll, iteratePages } from './client';
import { ApiError, errorFromBody, friendlyMessage } from './errors';
import { int64, optInt64, parseAIModel, parseUser } from './types';

interface Call {
  url: string;
  init: RequestInit;
}

function fakeFetch(responses: (Response | Error)[]): { fetch: FetchLike; calls: Call[] } {
  const calls: Call[] = [];
  const fetch: FetchLike = async (url, init = {}) => {
    calls.push({ url, init });
    const r = responses.shift();
    if (!r) throw new Error('no more responses');
    if (r instanceof Error) throw r;
    return r;
  };
  return { fetch, calls };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function header(c: Call, name: string): string | undefined {
  return (c.init.headers as Record<string, string>)[name];
}

describe('auth header', () => {
  it('sends the current session token as a bearer token on every admin call', async () => {
    let token = 'sess-1';
    const { fetch, calls } = fakeFetch([json({ users: [] }), json({ users: [] })]);
    const c = new AdminClient({ fetch, token: () => token });
    await c.listUsers();
    token = 'sess-2';
    await c.listUsers();
    expect(header(calls[0], 'authorization')).toBe('Bearer sess-1');
    expect(header(calls[1], 'authorization')).toBe('Bearer sess-2');
  });

  it('sends no authorization header without a session (login)', async () => {
    const { fetch, calls } = fakeFetch([
      json({ session_token: 'tok', expires_at: '2026-12-01T00:00:00Z', user: { user_id: 'u_1', email: 'a@x', role: 'ROLE_ADMIN' } }),
    ]);
    const s = await new AdminClient({ fetch }).login('a@x', 'pw');
    expect(header(calls[0], 'authorization')).toBeUndefined();
    expect(calls[0].url).toBe('/admin/v1/login');
    expect(calls[0].init.method).toBe('POST');
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ email: 'a@x', password: 'pw' });
    expect(s).toMatchObject({ token: 'tok', user: { userId: 'u_1', role: 'ROLE_ADMIN' } });
  });
});

describe('int64 fields', () => {
  it('parses int64 strings to numbers and keeps unset optional limits as null', () => {
    const u = parseUser({
      user_id: 'u_1',
      role: 'ROLE_MEMBER',
      quota: { used_micro_credits: '1234567890123', limit_tokens: '500', used_tokens: '7' },
      rate_limits: { requests_per_minute: 60 },
    });
    expect(u.quota.usedMicroCredits).toBe(1234567890123);
    expect(u.quota.limitMicroCredits).toBeNull();
    expect(u.quota.limitTokens).toBe(500);
    expect(u.quota.usedTokens).toBe(7);
    expect(u.rateLimits).toEqual({ requests_per_minute: 60 });
  });

  it('treats a missing int64 as its default and junk as the fallback', () => {
    expect(int64(undefined)).toBe(0);
    expect(int64('-12')).toBe(-12);
    expect(int64('12abc', 3)).toBe(3);
    expect(optInt64('0')).toBe(0);
    expect(optInt64(undefined)).toBeNull();
    expect(parseAIModel({ name: 'm' }).backlog).toBe(-1);
    expect(parseAIModel({ name: 'm', backlog: '42', status: { ready_replicas: 2 } })).toMatchObject({
      backlog: 42,
      status: { readyReplicas: 2 },
    });
  });

  it('sends int64 request fields as strings', async () => {
    const { fetch, calls } = fakeFetch([json({ user_id: 'u_2' })]);
    await new AdminClient({ fetch, token: () => 't' }).createUser({
      email: 'b@x',
      role: 'ROLE_MEMBER',
      limitMicroCredits: 5_000_000,
      limitTokens: null,
    });
    expect(JSON.parse(String(calls[0].init.body))).toEqual({ email: 'b@x', role: 'ROLE_MEMBER', quota: { limit_micro_credits: '5000000' } });
  });
});

describe('errors', () => {
  it('maps the OpenAI-style error JSON to an ApiError with status, type and code', async () => {
    const body = { error: { message: 'Rate limit exceeded', type: 'rate_limit_error', code: 'rate_limit_exceeded' } };
    const { fetch } = fakeFetch([json(body, 429)]);
    const err = await new AdminClient({ fetch, token: () => 't' }).listUsers().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 429, type: 'rate_limit_error', code: 'rate_limit_exceeded', message: 'Rate limit exceeded' });
    expect((err as ApiError).friendly).toMatch(/Rate limit or quota reached/);
  });

  it('calls onUnauthorized on 401 so the console signs out', async () => {
    const onUnauthorized = vi.fn();
    const { fetch } = fakeFetch([json({ error: { message: 'session expired', type: 'invalid_request_error', code: 'unauthenticated' } }, 401)]);
    await expect(new AdminClient({ fetch, token: () => 't', onUnauthorized }).getUser('u_1')).rejects.toMatchObject({ status: 401 });
    expect(onUnauthorized).toHaveBeenCalledOnce();
  });

  it('keeps plain-text and empty error bodies readable', () => {
    expect(errorFromBody(503, 'upstream connect error', 'Service Unavailable').message).toBe('upstream connect error');
    expect(errorFromBody(502, '', 'Bad Gateway').message).toBe('Bad Gateway');
    expect(errorFromBody(500, '', '').message).toBe('HTTP 500');
  });

  it('turns a network failure into status 0 and passes aborts through', async () => {
    const { fetch } = fakeFetch([new TypeError('Failed to fetch')]);
    await expect(new AdminClient({ fetch }).listUsers()).rejects.toMatchObject({ status: 0, code: 'network_error' });
    const abort = new Error('aborted');
    abort.name = 'AbortError';
    const f2 = fakeFetch([abort]);
    await expect(new AdminClient({ fetch: f2.fetch }).listUsers()).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('explains 401, 403, 429 and 503 in words', () => {
    expect(friendlyMessage(401, 'bad key', 'invalid_api_key')).toMatch(/API key was refused/);
    expect(friendlyMessage(401, 'expired')).toMatch(/Sign in again/);
    expect(friendlyMessage(403, 'no')).toMatch(/Not allowed/);
    expect(friendlyMessage(503, 'down')).toMatch(/not available/);
  });
});

describe('paging', () => {
  it('follows next_page_token until it is empty, sending page_token', async () => {
    const { fetch, calls } = fakeFetch([
      json({ users: [{ user_id: 'a' }, { user_id: 'b' }], next_page_token: 'p2' }),
      json({ users: [{ user_id: 'c' }], next_page_token: 'p3' }),
      json({ users: [{ user_id: 'd' }] }),
    ]);
    const c = new AdminClient({ fetch, token: () => 't' });
    const all = await collectAll((t) => c.listUsers(t, 2));
    expect(all.map((u) => u.userId)).toEqual(['a', 'b', 'c', 'd']);
    expect(calls.map((x) => new URL(x.url, 'http://h').searchParams.get('page_token'))).toEqual([null, 'p2', 'p3']);
    expect(new URL(calls[0].url, 'http://h').searchParams.get('page_size')).toBe('2');
  });

  it('stops on a repeated page token instead of looping forever', async () => {
    const pages = [];
    for await (const items of iteratePages(async () => ({ items: [1], nextPageToken: 'same' }))) pages.push(items);
    expect(pages.length).toBe(2);
  });

  it('pages the audit log and the models the same way', async () => {
    const { fetch, calls } = fakeFetch([
      json({ entries: [{ entry_id: '9', at: '2026-11-30T00:00:00Z' }], next_page_token: '9' }),
      json({ entries: [] }),
      json({ models: [{ name: 'echo', backlog: '3' }], next_page_token: '' }),
    ]);
    const c = new AdminClient({ fetch, token: () => 't' });
    expect((await collectAll((t) => c.listAudit(t))).map((e) => e.entryId)).toEqual(['9']);
    expect((await collectAll((t) => c.listModels(t))).map((m) => m.backlog)).toEqual([3]);
    expect(calls[2].url).toMatch(/^\/admin\/v1\/aimodels\?/);
  });
});

describe('routes', () => {
  it('uses the REST routes of admin.proto', async () => {
    const { fetch, calls } = fakeFetch(Array.from({ length: 8 }, () => json({})));
    const c = new AdminClient({ fetch, token: () => 't' });
    await c.rollToken('tok_1');
    await c.updateToken('tok_1', { allowedModels: ['echo'] });
    await c.topUp({ userId: 'u_1' }, 1000, 0, 'k1');
    await c.queryUsage({ groupBy: ['USAGE_GROUP_BY_MODEL', 'USAGE_GROUP_BY_DAY'], start: '2026-11-01T00:00:00Z' });
    await c.createModel('echo', { type: 'local', model: 'echo' });
    await c.updateModel('echo', { type: 'local', model: 'echo', replicas: 2 });
    await c.setPrice('echo', 100, 200);
    await c.deleteToken('tok_1');
    expect(calls.map((x) => `${x.init.method} ${x.url}`)).toEqual([
      'POST /admin/v1/tokens/tok_1:roll',
      'PATCH /admin/v1/tokens/tok_1',
      'POST /admin/v1/quotas:topup',
      'POST /admin/v1/usage:query',
      'POST /admin/v1/aimodels',
      'PUT /admin/v1/aimodels/echo',
      'POST /admin/v1/models/echo/prices',
      'DELETE /admin/v1/tokens/tok_1',
    ]);
    const body = (i: number) => JSON.parse(String(calls[i].init.body)) as unknown;
    expect(body(1)).toEqual({ allowed_models: ['echo'], set_allowed_models: true });
    expect(body(2)).toEqual({ user_id: 'u_1', micro_credits: '1000', tokens: '0', idempotency_key: 'k1' });
    expect(body(3)).toEqual({ group_by: ['USAGE_GROUP_BY_MODEL', 'USAGE_GROUP_BY_DAY'], start: '2026-11-01T00:00:00Z' });
    expect(body(4)).toEqual({ name: 'echo', spec: { type: 'local', model: 'echo' } });
    expect(body(5)).toEqual({ type: 'local', model: 'echo', replicas: 2 });
    expect(body(6)).toEqual({ prompt_micro_credits_per_1k: '100', completion_micro_credits_per_1k: '200' });
  });
});

// @vitest-environment jsdom
// The app rendered in a DOM against a fake edge (fetch stubbed): sign-in, the models page with 500
// models, the usage page with a year of daily rows, the model form's YAML preview, the chat's
// streamed answer and stop button.

import { act } from 'react';
import { createRoot, type Root } from 'react-dom/client';
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { App } from './App';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

type Handler = (url: URL, init: RequestInit) => Response | Promise<Response>;

let root: Root | null = null;
let box: HTMLElement;

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function edge(routes: Record<string, Handler>) {
  const calls: { url: URL; init: RequestInit }[] = [];
  vi.stubGlobal('fetch', async (input: string, init: RequestInit = {}) => {
    const url = new URL(input, 'http://console.test');
    calls.push({ url, init });
    const key = `${init.method ?? 'GET'} ${url.pathname}`;
    const h = routes[key];
    if (!h) return json({ error: { message: `no route ${key}`, type: 'invalid_request_error', code: 'not_found' } }, 404);
    return h(url, init);
  });
  return calls;
}

function signIn(role: 'ROLE_ADMIN' | 'ROLE_MEMBER') {
  sessionStorage.setItem(
    'uplion.console.session',
    JSON.stringify({ token: 'sess', expiresAt: '', user: { userId: 'u_me', email: 'me@x', role, quota: {}, rateLimits: {} } }),
  );
}

async function mount(path: string) {
  history.replaceState(null, '', path);
  root = createRoot(box);
  await act(async () => root?.render(<App />));
}

async function until<T>(f: () => T | null | undefined | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out; page: ${box.textContent?.slice(0, 400)}`);
    await act(async () => new Promise((r) => setTimeout(r, 10)));
  }
}

function q<T extends Element = HTMLElement>(sel: string): T | null {
  return box.querySelector<T>(sel);
}

/** Sets an input's value the way a user's typing does (React listens to the native setter). */
function type(el: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement, value: string) {
  const proto = el instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype : el instanceof HTMLSelectElement ? HTMLSelectElement.prototype : HTMLInputElement.prototype;
  Object.getOwnPropertyDescriptor(proto, 'value')?.set?.call(el, value);
  el.dispatchEvent(new Event(el instanceof HTMLSelectElement ? 'change' : 'input', { bubbles: true }));
}

const consoleError = console.error;

beforeEach(() => {
  // state updates from a resolved fetch land between act() calls; React's reminder about that is noise here
  vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('not wrapped in act')) return;
    consoleError(...args);
  });
  box = document.createElement('div');
  document.body.appendChild(box);
  sessionStorage.clear();
  localStorage.clear();
});

afterEach(async () => {
  await act(async () => root?.unmount());
  root = null;
  box.remove();
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('sign-in', () => {
  it('signs in and shows the admin navigation', async () => {
    const calls = edge({
      'POST /admin/v1/login': () =>
        json({ session_token: 'sess-new', expires_at: '2099-01-01T00:00:00Z', user: { user_id: 'u_1', email: 'a@x', role: 'ROLE_ADMIN' } }),
      'GET /admin/v1/users': () => json({ users: [{ user_id: 'u_1', email: 'a@x', role: 'ROLE_ADMIN', quota: { used_micro_credits: '2500000' } }] }),
    });
    await mount('/');
    type(q<HTMLInputElement>('[data-testid=login-email]')!, 'a@x');
    type(q<HTMLInputElement>('[data-testid=login-password]')!, 'pw');
    await act(async () => q<HTMLButtonElement>('[data-testid=login-submit]')!.click());
    await until(() => q('[data-testid=users-table]'));
    expect(location.pathname).toBe('/users');
    expect(q('[data-testid=nav-models]')).not.toBeNull();
    expect(q('[data-testid=users-table]')!.textContent).toContain('2.5');
    const usersCall = calls.find((c) => c.url.pathname === '/admin/v1/users')!;
    expect((usersCall.init.headers as Record<string, string>).authorization).toBe('Bearer sess-new');
  });

  it('shows the error the edge sends', async () => {
    edge({ 'POST /admin/v1/login': () => json({ error: { message: 'Wrong email or password.', type: 'invalid_request_error', code: 'unauthenticated' } }, 401) });
    await mount('/');
    type(q<HTMLInputElement>('[data-testid=login-email]')!, 'a@x');
    type(q<HTMLInputElement>('[data-testid=login-password]')!, 'bad');
    await act(async () => q<HTMLButtonElement>('[data-testid=login-submit]')!.click());
    const alert = await until(() => q('[role=alert]'));
    expect(alert.textContent).toContain('Wrong email or password.');
  });

  it('gives members their own views only', async () => {
    signIn('ROLE_MEMBER');
    edge({ 'GET /admin/v1/users/u_me/tokens': () => json({ tokens: [] }) });
    await mount('/keys');
    await until(() => box.textContent?.includes('No keys yet.'));
    expect(q('[data-testid=nav-users]')).toBeNull();
    expect(q('[data-testid=nav-chat]')).not.toBeNull();
  });
});

describe('models page', () => {
  it('renders 500 models paged 50 at a time, quickly', async () => {
    signIn('ROLE_ADMIN');
    const models = Array.from({ length: 500 }, (_, i) => ({
      name: `m${String(i).padStart(3, '0')}`,
      spec: { type: 'local', model: `model-${i}` },
      status: { state: 'Running', replicas: 2, ready_replicas: 1 },
      backlog: String(i),
    }));
    const calls = edge({
      'GET /admin/v1/aimodels': (url) => {
        const start = Number(url.searchParams.get('page_token') || 0);
        const size = Number(url.searchParams.get('page_size'));
        const next = start + size < models.length ? String(start + size) : '';
        return json({ models: models.slice(start, start + size), next_page_token: next });
      },
    });
    const t0 = performance.now();
    await mount('/models');
    await until(() => q('[data-testid=models-table]'));
    const took = performance.now() - t0;
    expect(box.textContent).toContain('500 models');
    expect(box.querySelectorAll('[data-testid=models-table] tbody tr').length).toBe(50);
    expect(q('[data-testid=model-status-m000]')!.textContent).toContain('Running');
    expect(calls.filter((c) => c.url.pathname === '/admin/v1/aimodels').length).toBe(3); // 200 + 200 + 100
    expect(took).toBeLessThan(3000);
    await act(async () => (box.querySelector('nav[aria-label="Model pages"] button:last-child') as HTMLButtonElement).click());
    expect(q('[data-testid=model-row-m050]')).not.toBeNull();
  });

  it('previews the YAML the form makes', async () => {
    signIn('ROLE_ADMIN');
    const calls = edge({ 'POST /admin/v1/aimodels': (_u, init) => json({ name: 'echo', spec: JSON.parse(String(init.body)).spec }), 'GET /admin/v1/aimodels': () => json({ models: [] }) });
    await mount('/models/new');
    type(await until(() => q<HTMLInputElement>('[data-testid=model-name]')), 'echo');
    type(q<HTMLInputElement>('[data-testid=model-model]')!, 'echo');
    expect(q('[data-testid=model-yaml]')!.textContent).toContain('kind: AIModel\nmetadata:\n  name: echo\nspec:\n  type: local\n  model: echo\n  replicas: 1');
    await act(async () => q<HTMLButtonElement>('[data-testid=model-submit]')!.click());
    await until(() => location.pathname === '/models');
    const body = JSON.parse(String(calls.find((c) => c.init.method === 'POST')!.init.body));
    expect(body).toEqual({ name: 'echo', spec: { type: 'local', model: 'echo', replicas: 1 } });
  });
});

describe('usage page', () => {
  it('charts and pages a year of daily rows', async () => {
    signIn('ROLE_ADMIN');
    const rows: unknown[] = [];
    edge({
      'POST /admin/v1/usage:query': (_u, init) => {
        const req = JSON.parse(String(init.body));
        const s = Date.parse(req.start);
        const e = Date.parse(req.end);
        rows.length = 0;
        for (let t = s; t < e; t += 86_400_000) {
          for (const model of ['echo', 'gpt', 'minilm']) {
            rows.push({ model, day: new Date(t).toISOString().slice(0, 10), requests: '3', prompt_tokens: '10', completion_tokens: '5', cost_micro_credits: '1000' });
          }
        }
        return json({ rows });
      },
    });
    await mount('/usage');
    await until(() => q('[data-testid=usage-table]'));
    expect(box.querySelectorAll('svg.chart')[0].querySelectorAll('rect').length).toBe(30);
    type(q<HTMLSelectElement>('[data-testid=usage-by]')!, 'day');
    const t0 = performance.now();
    await act(async () => [...box.querySelectorAll('button')].find((b) => b.textContent === '1 year')!.click());
    await until(() => box.querySelectorAll('svg.chart')[0]?.querySelectorAll('rect').length === 365);
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(box.querySelectorAll('[data-testid=usage-table] tbody tr').length).toBe(50);
    expect(q('[data-testid=usage-totals]')!.textContent).toContain((365 * 9).toLocaleString());
  });
});

describe('chat', () => {
  it('streams an answer with usage, and stops a stream', async () => {
    // Chromium 156 returns a Promise from scrollIntoView: an effect returning it would crash React
    const scroll = Element.prototype.scrollIntoView;
    Element.prototype.scrollIntoView = function () {
      return Promise.resolve() as unknown as void;
    };
    onTestFinished(() => {
      Element.prototype.scrollIntoView = scroll;
    });
    signIn('ROLE_MEMBER');
    sessionStorage.setItem('uplion.console.chatKey', 'upl-chat');
    const enc = new TextEncoder();
    let hang = false;
    const calls = edge({
      'GET /v1/models': () => json({ data: [{ id: 'echo' }] }),
      'POST /v1/chat/completions': (_u, init) =>
        new Response(
          new ReadableStream({
            start(ctl) {
              ctl.enqueue(enc.encode(`data: ${JSON.stringify({ choices: [{ delta: { content: '**hi** there' } }] })}\n\n`));
              if (hang) {
                init.signal?.addEventListener('abort', () => ctl.error(Object.assign(new Error('aborted'), { name: 'AbortError' })));
                return;
              }
              ctl.enqueue(enc.encode(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 } })}\n\n`));
              ctl.enqueue(enc.encode('data: [DONE]\n\n'));
              ctl.close();
            },
          }),
          { status: 200, headers: { 'content-type': 'text/event-stream' } },
        ),
    });
    await mount('/chat');
    await until(() => q<HTMLSelectElement>('[data-testid=chat-model]')?.value === 'echo');
    type(q<HTMLTextAreaElement>('[data-testid=chat-input]')!, 'hello');
    await act(async () => q<HTMLButtonElement>('[data-testid=chat-send]')!.click());
    const usage = await until(() => q('[data-testid=turn-usage]'));
    expect(usage.textContent).toContain('6 tokens');
    expect(q('[data-testid=turn-assistant] .md strong')!.textContent).toBe('hi');
    const chatCall = calls.find((c) => c.url.pathname === '/v1/chat/completions')!;
    expect((chatCall.init.headers as Record<string, string>).authorization).toBe('Bearer upl-chat');
    expect(JSON.parse(localStorage.getItem('uplion.console.conversations')!)[0].turns.length).toBe(2);

    hang = true;
    type(q<HTMLTextAreaElement>('[data-testid=chat-input]')!, 'again');
    await act(async () => q<HTMLButtonElement>('[data-testid=chat-send]')!.click());
    const stop = await until(() => q<HTMLButtonElement>('[data-testid=chat-stop]'));
    await act(async () => stop.click());
    await until(() => box.textContent?.includes('Stopped.'));
    expect(q('[data-testid=chat-send]')).not.toBeNull();
  });

  it('explains a 429 from the edge', async () => {
    signIn('ROLE_MEMBER');
    sessionStorage.setItem('uplion.console.chatKey', 'upl-chat');
    edge({
      'GET /v1/models': () => json({ data: [{ id: 'echo' }] }),
      'POST /v1/chat/completions': () => json({ error: { message: 'Quota exhausted', type: 'insufficient_quota', code: 'insufficient_quota' } }, 429),
    });
    await mount('/chat');
    await until(() => q<HTMLSelectElement>('[data-testid=chat-model]')?.value === 'echo');
    type(q<HTMLTextAreaElement>('[data-testid=chat-input]')!, 'hello');
    await act(async () => q<HTMLButtonElement>('[data-testid=chat-send]')!.click());
    const alert = await until(() => q('[data-testid=turn-assistant] [role=alert]'));
    expect(alert.textContent).toContain('Rate limit or quota reached (Quota exhausted)');
    expect(q('[data-testid=chat-retry]')).not.toBeNull();
  });
});

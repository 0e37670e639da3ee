// The console's client against the real admin REST API and inference edge (see vitest.contract.config.ts).

import { describe, expect, it } from 'vitest';
import { AdminClient, collectAll } from '../api/client';
import { ApiError } from '../api/errors';
import { listModelIds, streamChat } from '../api/inference';
import { emptyForm, formToSpec, specToForm } from '../lib/aimodelForm';

declare const process: { env: Record<string, string | undefined> };

const EDGE = process.env.UPLION_EDGE_URL ?? '';
const ADMIN_TOKEN = process.env.UPLION_ADMIN_TOKEN ?? '';
if (!EDGE || !ADMIN_TOKEN) throw new Error('UPLION_EDGE_URL and UPLION_ADMIN_TOKEN are required (tests/web/test_console_contract.py sets them)');

const run = Math.random().toString(36).slice(2, 8);
const absolute = (input: string, init?: RequestInit) => fetch(new URL(input, EDGE), init);

function client(token: string): AdminClient {
  return new AdminClient({ baseUrl: EDGE, token: () => token });
}

async function failure(p: Promise<unknown>): Promise<ApiError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ApiError);
  return e as ApiError;
}

describe('the admin REST API as the console uses it', () => {
  const password = `pw-${run}-correct-horse`;
  const adminEmail = `admin-${run}@console.test`;
  const memberEmail = `member-${run}@console.test`;
  let session = '';
  let memberId = '';

  it('creates an admin with a password, who signs in', async () => {
    const made = await client(ADMIN_TOKEN).createUser({ email: adminEmail, password, role: 'ROLE_ADMIN', displayName: 'Console admin' });
    expect(made.role).toBe('ROLE_ADMIN');
    const s = await new AdminClient({ baseUrl: EDGE }).login(adminEmail, password);
    expect(s.token).not.toBe('');
    expect(s.user.role).toBe('ROLE_ADMIN');
    expect(s.user.email).toBe(adminEmail);
    expect(Date.parse(s.expiresAt)).toBeGreaterThan(Date.now());
    session = s.token;
  });

  it('refuses a wrong password with the error JSON', async () => {
    const e = await failure(new AdminClient({ baseUrl: EDGE }).login(adminEmail, 'wrong'));
    expect(e.status).toBe(401);
    expect(e.message).not.toBe('');
  });

  it('creates a member with int64 limits and reads them back as numbers', async () => {
    const u = await client(session).createUser({ email: memberEmail, password, role: 'ROLE_MEMBER', limitMicroCredits: 7_000_000, limitTokens: 123_456 });
    memberId = u.userId;
    expect(u.quota.limitMicroCredits).toBe(7_000_000);
    expect(u.quota.limitTokens).toBe(123_456);
    expect(u.quota.usedMicroCredits).toBe(0);
    const again = await client(session).getUser(u.userId);
    expect(again).toMatchObject({ email: memberEmail, role: 'ROLE_MEMBER', disabled: false });
  });

  it('pages through users with page tokens', async () => {
    for (let i = 0; i < 3; i++) await client(session).createUser({ email: `p${i}-${run}@console.test`, role: 'ROLE_MEMBER' });
    const c = client(session);
    const first = await c.listUsers('', 2);
    expect(first.items.length).toBe(2);
    expect(first.nextPageToken).not.toBe('');
    const all = await collectAll((t) => c.listUsers(t, 2));
    const ids = all.map((u) => u.userId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toContain(memberId);
    expect(all.length).toBeGreaterThanOrEqual(6);
  });

  it('updates role, limits and disables a user', async () => {
    const c = client(session);
    const u = await c.updateUser(memberId, { quotaLimitTokens: 999, rateLimits: { requests_per_minute: 30 }, disabled: true });
    expect(u.quota.limitTokens).toBe(999);
    expect(u.rateLimits.requests_per_minute).toBe(30);
    expect(u.disabled).toBe(true);
    expect((await c.updateUser(memberId, { disabled: false })).disabled).toBe(false);
    const q = await c.topUp({ userId: memberId }, 1_000_000, 0, `topup-${run}`);
    expect(q.limitMicroCredits).toBe(8_000_000);
    const replay = await c.topUp({ userId: memberId }, 1_000_000, 0, `topup-${run}`);
    expect(replay.limitMicroCredits).toBe(8_000_000); // the idempotency key applies it once
  });

  it('manages keys: secret once, roll, disable, allow-list, delete', async () => {
    const c = client(session);
    const expires = new Date(Date.now() + 86_400_000).toISOString();
    const made = await c.createToken(memberId, { name: 'laptop', expiresAt: expires, allowedModels: ['echo'], quotaLimitMicroCredits: 2_000_000 });
    expect(made.secret).toMatch(/^upl-/);
    expect(made.token).toMatchObject({ name: 'laptop', allowedModels: ['echo'], scope: 'TOKEN_SCOPE_INFERENCE' });
    expect(made.token.quota.limitMicroCredits).toBe(2_000_000);
    expect(Date.parse(made.token.expiresAt)).toBeGreaterThan(Date.now());
    const listed = await c.listTokens(memberId);
    expect(listed.map((t) => t.tokenId)).toContain(made.token.tokenId);
    expect(JSON.stringify(listed)).not.toContain(made.secret);
    const rolled = await c.rollToken(made.token.tokenId);
    expect(rolled.secret).toMatch(/^upl-/);
    expect(rolled.secret).not.toBe(made.secret);
    const changed = await c.updateToken(made.token.tokenId, { disabled: true, allowedModels: ['echo', 'gpt'] });
    expect(changed.disabled).toBe(true);
    expect(changed.allowedModels.sort()).toEqual(['echo', 'gpt']);
    await c.deleteToken(made.token.tokenId);
    expect((await c.listTokens(memberId)).map((t) => t.tokenId)).not.toContain(made.token.tokenId);
  });

  it('lets a member manage their own keys and refuses admin pages with 403', async () => {
    const s = await new AdminClient({ baseUrl: EDGE }).login(memberEmail, password);
    expect(s.user.role).toBe('ROLE_MEMBER');
    const c = client(s.token);
    const key = await c.createToken(s.user.userId, { name: 'console chat', expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
    expect(key.secret).toMatch(/^upl-/);
    expect((await c.listTokens(s.user.userId)).length).toBeGreaterThan(0);
    const e = await failure(c.listUsers());
    expect(e.status).toBe(403);
    const rows = await c.queryUsage({ groupBy: ['USAGE_GROUP_BY_MODEL', 'USAGE_GROUP_BY_DAY'] });
    expect(Array.isArray(rows)).toBe(true);
  });

  it('sets and lists prices with int64 values', async () => {
    const c = client(session);
    const p = await c.setPrice(`m-${run}`, 150, 600);
    expect(p).toMatchObject({ model: `m-${run}`, promptPer1k: 150, completionPer1k: 600 });
    const all = await c.listPrices(`m-${run}`);
    expect(all[0]).toMatchObject({ promptPer1k: 150, completionPer1k: 600 });
  });

  it('queries usage for a range grouped by model and day', async () => {
    const rows = await client(session).queryUsage({
      start: new Date(Date.now() - 30 * 86_400_000).toISOString(),
      end: new Date(Date.now() + 86_400_000).toISOString(),
      groupBy: ['USAGE_GROUP_BY_MODEL', 'USAGE_GROUP_BY_DAY'],
    });
    expect(Array.isArray(rows)).toBe(true);
  });

  it('pages the audit log', async () => {
    const c = client(session);
    const first = await c.listAudit('', 2);
    expect(first.items.length).toBe(2);
    expect(first.items[0].action).not.toBe('');
    expect(first.nextPageToken).not.toBe('');
    const all = await collectAll((t) => c.listAudit(t, 5));
    expect(all.length).toBeGreaterThan(5);
    expect(new Set(all.map((e) => e.entryId)).size).toBe(all.length);
  });

  it('creates, reads, edits, lists and deletes an AIModel from the form', async () => {
    const c = client(session);
    const name = `web-${run}`;
    const form = { ...emptyForm(), name, model: `webm-${run}`, maxProcessNum: '4', promptPer1k: '10', completionPer1k: '20', env: [{ name: 'A', value: 'b' }] };
    const made = await c.createModel(name, formToSpec(form));
    expect(made.name).toBe(name);
    const got = await c.getModel(name);
    expect(formToSpec(specToForm(got.name, got.spec))).toEqual(formToSpec(form));
    const edited = await c.updateModel(name, formToSpec({ ...form, replicas: '2' }));
    expect(specToForm(edited.name, edited.spec).replicas).toBe('2');
    const all = await collectAll((t) => c.listModels(t, 1));
    expect(all.map((m) => m.name)).toContain(name);
    expect(typeof all[0].backlog).toBe('number');
    expect(Array.isArray(await c.modelEvents(name))).toBe(true);
    await c.deleteModel(name);
    expect((await failure(c.getModel(name))).status).toBe(404);
  });

  it('maps 401 and 404 from the edge', async () => {
    expect((await failure(client('upl-not-a-real-session').listUsers())).status).toBe(401);
    const e = await failure(client(session).getUser('u_does_not_exist'));
    expect(e.status).toBe(404);
    expect(e.message).not.toBe('');
  });
});

describe('the inference API as the chat page uses it', () => {
  it('refuses an unknown key with 401 and the error JSON', async () => {
    const e = await failure(listModelIds('upl-unknown', absolute));
    expect(e.status).toBe(401);
    expect(e.code).toBe('invalid_api_key');
  });

  it('refuses the session token for inference', async () => {
    const s = await new AdminClient({ baseUrl: EDGE }).login(`admin-${run}@console.test`, `pw-${run}-correct-horse`);
    const e = await failure(listModelIds(s.token, absolute));
    expect(e.status).toBe(401);
  });

  it('reports the missing gateway as 503 with a message', async () => {
    const admin = client(ADMIN_TOKEN);
    const u = await admin.createUser({ email: `chat-${run}@console.test`, role: 'ROLE_MEMBER' });
    const key = await admin.createToken(u.userId, { name: 'chat' });
    const e = await failure(
      (async () => {
        for await (const ev of streamChat(key.secret, 'echo', [{ role: 'user', content: 'hi' }], undefined, absolute)) void ev;
      })(),
    );
    expect(e.status).toBe(503);
    expect(e.friendly).toMatch(/not available/);
  });
});

// The admin API client: every call carries `Authorization: Bearer <session token>`; failures become
// ApiError (status, OpenAI-style type/code, message); lists page through page_token/next_page_token.

import { ApiError, errorFromBody } from './errors';
import {
  type AIModel,
  type AIModelEvent,
  type AIModelSpecJson,
  type ApiToken,
  type AuditEntry,
  type CreatedToken,
  type ModelPrice,
  type Quota,
  type RateLimits,
  type Role,
  type Session,
  type TokenScope,
  type UsageRow,
  type User,
  listOf,
  nextPageToken,
  parseAIModel,
  parseAIModelEvent,
  parseAudit,
  parseCreatedToken,
  parseLogin,
  parsePrice,
  parseQuota,
  parseToken,
  parseUsageRow,
  parseUser,
} from './types';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

export interface ClientOptions {
  fetch?: FetchLike;
  /** The session token to send, read on every call (it changes at login/logout). */
  token?: () => string;
  /** Called when the admin API answers 401 (the session ended). */
  onUnauthorized?: (err: ApiError) => void;
  baseUrl?: string;
}

export type UsageGroup = 'USAGE_GROUP_BY_USER' | 'USAGE_GROUP_BY_TOKEN' | 'USAGE_GROUP_BY_MODEL' | 'USAGE_GROUP_BY_DAY';

export interface UsageQuery {
  userId?: string;
  tokenId?: string;
  model?: string;
  /** RFC 3339 */
  start?: string;
  end?: string;
  groupBy: UsageGroup[];
}

export interface NewUser {
  email: string;
  displayName?: string;
  password?: string;
  role: Role;
  tier?: string;
  limitMicroCredits?: number | null;
  limitTokens?: number | null;
  rateLimits?: RateLimits;
}

export interface UserChange {
  displayName?: string;
  password?: string;
  currentPassword?: string;
  role?: Role;
  disabled?: boolean;
  tier?: string;
  rateLimits?: RateLimits;
  quotaLimitMicroCredits?: number;
  quotaLimitTokens?: number;
}

export interface NewToken {
  name: string;
  /** RFC 3339; empty: never expires */
  expiresAt?: string;
  allowedModels?: string[];
  quotaLimitMicroCredits?: number | null;
  quotaLimitTokens?: number | null;
  rateLimits?: RateLimits;
  scope?: TokenScope;
}

export interface TokenChange {
  name?: string;
  disabled?: boolean;
  expiresAt?: string;
  allowedModels?: string[];
  quotaLimitMicroCredits?: number;
  quotaLimitTokens?: number;
  rateLimits?: RateLimits;
}

/** int64 request fields are sent as strings (what protobuf JSON prints, and exact past 2^53). */
function i64(n: number): string {
  return String(Math.trunc(n));
}

function hasKeys(o: object): boolean {
  return Object.keys(o).length > 0;
}

/** Every item of a paged list, page after page (stops when next_page_token is empty). */
export async function* iteratePages<T>(
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  maxPages = 1000,
): AsyncGenerator<T[], void, undefined> {
  let token = '';
  const seen = new Set<string>();
  for (let i = 0; i < maxPages; i++) {
    const page = await fetchPage(token);
    yield page.items;
    if (!page.nextPageToken || seen.has(page.nextPageToken)) return; // a repeated token would loop forever
    seen.add(page.nextPageToken);
    token = page.nextPageToken;
  }
}

export async function collectAll<T>(fetchPage: (pageToken: string) => Promise<Page<T>>, maxPages = 1000): Promise<T[]> {
  const out: T[] = [];
  for await (const items of iteratePages(fetchPage, maxPages)) out.push(...items);
  return out;
}

export class AdminClient {
  private readonly fetchImpl: FetchLike;
  private readonly token: () => string;
  private readonly onUnauthorized?: (err: ApiError) => void;
  private readonly base: string;

  constructor(opts: ClientOptions = {}) {
    this.fetchImpl = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.token = opts.token ?? (() => '');
    this.onUnauthorized = opts.onUnauthorized;
    this.base = opts.baseUrl ?? '';
  }

  /** One call: JSON in, JSON out; an ApiError for any non-2xx status or a network failure. */
  async call(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await this.fetchImpl(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if ((e as Error)?.name === 'AbortError') throw e;
      throw new ApiError(0, (e as Error)?.message || 'network error', 'network_error', 'network_error');
    }
    const text = await res.text();
    if (!res.ok) {
      const err = errorFromBody(res.status, text, res.statusText);
      if (res.status === 401 && this.onUnauthorized) this.onUnauthorized(err);
      throw err;
    }
    if (!text) return {};
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new ApiError(res.status, 'the server answered with something other than JSON', 'api_error', 'bad_json');
    }
  }

  // --- sessions -------------------------------------------------------------------------------

  async login(email: string, password: string): Promise<Session> {
    return parseLogin(await this.call('POST', '/admin/v1/login', { email, password }));
  }

  async logout(everywhere = false): Promise<void> {
    await this.call('POST', '/admin/v1/logout', { everywhere });
  }

  // --- users ----------------------------------------------------------------------------------

  async listUsers(pageToken = '', pageSize = 100): Promise<Page<User>> {
    const q = new URLSearchParams({ page_size: String(pageSize) });
    if (pageToken) q.set('page_token', pageToken);
    const r = await this.call('GET', `/admin/v1/users?${q}`);
    return { items: listOf(r, 'users', parseUser), nextPageToken: nextPageToken(r) };
  }

  async getUser(userId: string): Promise<User> {
    return parseUser(await this.call('GET', `/admin/v1/users/${encodeURIComponent(userId)}`));
  }

  async createUser(u: NewUser): Promise<User> {
    const body: Record<string, unknown> = { email: u.email, role: u.role };
    if (u.displayName) body.display_name = u.displayName;
    if (u.password) body.password = u.password;
    if (u.tier) body.tier = u.tier;
    const quota: Record<string, string> = {};
    if (u.limitMicroCredits != null) quota.limit_micro_credits = i64(u.limitMicroCredits);
    if (u.limitTokens != null) quota.limit_tokens = i64(u.limitTokens);
    if (hasKeys(quota)) body.quota = quota;
    if (u.rateLimits && hasKeys(u.rateLimits)) body.rate_limits = u.rateLimits;
    return parseUser(await this.call('POST', '/admin/v1/users', body));
  }

  async updateUser(userId: string, c: UserChange): Promise<User> {
    const body: Record<string, unknown> = {};
    if (c.displayName !== undefined) body.display_name = c.displayName;
    if (c.password !== undefined) body.password = c.password;
    if (c.currentPassword !== undefined) body.current_password = c.currentPassword;
    if (c.role !== undefined) body.role = c.role;
    if (c.disabled !== undefined) body.disabled = c.disabled;
    if (c.tier !== undefined) body.tier = c.tier;
    if (c.rateLimits !== undefined) body.rate_limits = c.rateLimits;
    if (c.quotaLimitMicroCredits !== undefined) body.quota_limit_micro_credits = i64(c.quotaLimitMicroCredits);
    if (c.quotaLimitTokens !== undefined) body.quota_limit_tokens = i64(c.quotaLimitTokens);
    return parseUser(await this.call('PATCH', `/admin/v1/users/${encodeURIComponent(userId)}`, body));
  }

  async deleteUser(userId: string): Promise<void> {
    await this.call('DELETE', `/admin/v1/users/${encodeURIComponent(userId)}`);
  }

  async topUp(target: { userId?: string; tokenId?: string }, microCredits: number, tokens: number, idempotencyKey: string): Promise<Quota> {
    const body: Record<string, unknown> = {
      micro_credits: i64(microCredits),
      tokens: i64(tokens),
      idempotency_key: idempotencyKey,
    };
    if (target.userId) body.user_id = target.userId;
    else if (target.tokenId) body.token_id = target.tokenId;
    return parseQuota(await this.call('POST', '/admin/v1/quotas:topup', body));
  }

  // --- tokens ---------------------------------------------------------------------------------

  async listTokens(userId: string): Promise<ApiToken[]> {
    return listOf(await this.call('GET', `/admin/v1/users/${encodeURIComponent(userId)}/tokens`), 'tokens', parseToken);
  }

  async createToken(userId: string, t: NewToken): Promise<CreatedToken> {
    const body: Record<string, unknown> = { name: t.name, scope: t.scope ?? 'TOKEN_SCOPE_INFERENCE' };
    if (t.expiresAt) body.expires_at = t.expiresAt;
    if (t.allowedModels?.length) body.allowed_models = t.allowedModels;
    if (t.quotaLimitMicroCredits != null) body.quota_limit_micro_credits = i64(t.quotaLimitMicroCredits);
    if (t.quotaLimitTokens != null) body.quota_limit_tokens = i64(t.quotaLimitTokens);
    if (t.rateLimits && hasKeys(t.rateLimits)) body.rate_limits = t.rateLimits;
    const r = await this.call('POST', `/admin/v1/users/${encodeURIComponent(userId)}/tokens`, body);
    return parseCreatedToken(r);
  }

  async updateToken(tokenId: string, c: TokenChange): Promise<ApiToken> {
    const body: Record<string, unknown> = {};
    if (c.name !== undefined) body.name = c.name;
    if (c.disabled !== undefined) body.disabled = c.disabled;
    if (c.expiresAt !== undefined) body.expires_at = c.expiresAt;
    if (c.allowedModels !== undefined) {
      body.allowed_models = c.allowedModels;
      body.set_allowed_models = true;
    }
    if (c.quotaLimitMicroCredits !== undefined) body.quota_limit_micro_credits = i64(c.quotaLimitMicroCredits);
    if (c.quotaLimitTokens !== undefined) body.quota_limit_tokens = i64(c.quotaLimitTokens);
    if (c.rateLimits !== undefined) body.rate_limits = c.rateLimits;
    return parseToken(await this.call('PATCH', `/admin/v1/tokens/${encodeURIComponent(tokenId)}`, body));
  }

  async rollToken(tokenId: string): Promise<CreatedToken> {
    return parseCreatedToken(await this.call('POST', `/admin/v1/tokens/${encodeURIComponent(tokenId)}:roll`, {}));
  }

  async deleteToken(tokenId: string): Promise<void> {
    await this.call('DELETE', `/admin/v1/tokens/${encodeURIComponent(tokenId)}`);
  }

  // --- prices, usage, audit -------------------------------------------------------------------

  async setPrice(model: string, promptPer1k: number, completionPer1k: number, effectiveFrom?: string): Promise<ModelPrice> {
    const body: Record<string, unknown> = {
      prompt_micro_credits_per_1k: i64(promptPer1k),
      completion_micro_credits_per_1k: i64(completionPer1k),
    };
    if (effectiveFrom) body.effective_from = effectiveFrom;
    return parsePrice(await this.call('POST', `/admin/v1/models/${encodeURIComponent(model)}/prices`, body));
  }

  async listPrices(model = ''): Promise<ModelPrice[]> {
    const q = model ? `?model=${encodeURIComponent(model)}` : '';
    return listOf(await this.call('GET', `/admin/v1/prices${q}`), 'prices', parsePrice);
  }

  async queryUsage(q: UsageQuery, signal?: AbortSignal): Promise<UsageRow[]> {
    const body: Record<string, unknown> = { group_by: q.groupBy };
    if (q.userId) body.user_id = q.userId;
    if (q.tokenId) body.token_id = q.tokenId;
    if (q.model) body.model = q.model;
    if (q.start) body.start = q.start;
    if (q.end) body.end = q.end;
    return listOf(await this.call('POST', '/admin/v1/usage:query', body, signal), 'rows', parseUsageRow);
  }

  async listAudit(pageToken = '', pageSize = 100): Promise<Page<AuditEntry>> {
    const q = new URLSearchParams({ page_size: String(pageSize) });
    if (pageToken) q.set('page_token', pageToken);
    const r = await this.call('GET', `/admin/v1/audit?${q}`);
    return { items: listOf(r, 'entries', parseAudit), nextPageToken: nextPageToken(r) };
  }

  // --- AI models ------------------------------------------------------------------------------

  async listModels(pageToken = '', pageSize = 200, signal?: AbortSignal): Promise<Page<AIModel>> {
    const q = new URLSearchParams({ page_size: String(pageSize) });
    if (pageToken) q.set('page_token', pageToken);
    const r = await this.call('GET', `/admin/v1/aimodels?${q}`, undefined, signal);
    return { items: listOf(r, 'models', parseAIModel), nextPageToken: nextPageToken(r) };
  }

  async getModel(name: string): Promise<AIModel> {
    return parseAIModel(await this.call('GET', `/admin/v1/aimodels/${encodeURIComponent(name)}`));
  }

  async createModel(name: string, spec: AIModelSpecJson): Promise<AIModel> {
    return parseAIModel(await this.call('POST', '/admin/v1/aimodels', { name, spec }));
  }

  async updateModel(name: string, spec: AIModelSpecJson): Promise<AIModel> {
    return parseAIModel(await this.call('PUT', `/admin/v1/aimodels/${encodeURIComponent(name)}`, spec));
  }

  async deleteModel(name: string): Promise<void> {
    await this.call('DELETE', `/admin/v1/aimodels/${encodeURIComponent(name)}`);
  }

  async modelEvents(name: string): Promise<AIModelEvent[]> {
    return listOf(await this.call('GET', `/admin/v1/aimodels/${encodeURIComponent(name)}/events`), 'events', parseAIModelEvent);
  }
}

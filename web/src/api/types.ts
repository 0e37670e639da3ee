// The admin API's messages as the console uses them, parsed from REST JSON (proto field names;
// int64/uint64 printed as strings, parsed here to numbers; unset optional limits are null).

export type Role = 'ROLE_ADMIN' | 'ROLE_MEMBER' | 'ROLE_UNSPECIFIED';
export type TokenScope = 'TOKEN_SCOPE_INFERENCE' | 'TOKEN_SCOPE_ADMIN' | 'TOKEN_SCOPE_UNSPECIFIED';

type Json = Record<string, unknown>;

/** An int64 as REST prints it ("123", or a number from a lenient server); missing or bad -> fallback. */
export function int64(v: unknown, fallback = 0): number {
  if (typeof v === 'number') return Number.isFinite(v) ? Math.trunc(v) : fallback;
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) return Number(v.trim());
  return fallback;
}

/** An optional int64: null when unset (unlimited). */
export function optInt64(v: unknown): number | null {
  return v === undefined || v === null || v === '' ? null : int64(v);
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : v == null ? '' : String(v);
}

function obj(v: unknown): Json {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {};
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export interface Quota {
  limitMicroCredits: number | null;
  usedMicroCredits: number;
  limitTokens: number | null;
  usedTokens: number;
}

export function parseQuota(v: unknown): Quota {
  const o = obj(v);
  return {
    limitMicroCredits: optInt64(o.limit_micro_credits),
    usedMicroCredits: int64(o.used_micro_credits),
    limitTokens: optInt64(o.limit_tokens),
    usedTokens: int64(o.used_tokens),
  };
}

export const RATE_LIMIT_FIELDS = [
  'requests_per_minute',
  'requests_per_hour',
  'requests_per_day',
  'tokens_per_minute',
  'tokens_per_day',
] as const;
export type RateLimitField = (typeof RATE_LIMIT_FIELDS)[number];
export type RateLimits = Partial<Record<RateLimitField, number>>;

export function parseRateLimits(v: unknown): RateLimits {
  const o = obj(v);
  const out: RateLimits = {};
  for (const f of RATE_LIMIT_FIELDS) {
    const n = optInt64(o[f]);
    if (n !== null) out[f] = n;
  }
  return out;
}

export interface User {
  userId: string;
  email: string;
  displayName: string;
  role: Role;
  disabled: boolean;
  quota: Quota;
  rateLimits: RateLimits;
  createdAt: string;
  tier: string;
}

export function parseUser(v: unknown): User {
  const o = obj(v);
  return {
    userId: str(o.user_id),
    email: str(o.email),
    displayName: str(o.display_name),
    role: (str(o.role) || 'ROLE_UNSPECIFIED') as Role,
    disabled: o.disabled === true,
    quota: parseQuota(o.quota),
    rateLimits: parseRateLimits(o.rate_limits),
    createdAt: str(o.created_at),
    tier: str(o.tier),
  };
}

export interface ApiToken {
  tokenId: string;
  userId: string;
  name: string;
  prefix: string;
  disabled: boolean;
  disabledByAdmin: boolean;
  expiresAt: string;
  allowedModels: string[];
  quota: Quota;
  rateLimits: RateLimits;
  createdAt: string;
  lastUsedAt: string;
  scope: TokenScope;
}

export function parseToken(v: unknown): ApiToken {
  const o = obj(v);
  return {
    tokenId: str(o.token_id),
    userId: str(o.user_id),
    name: str(o.name),
    prefix: str(o.prefix),
    disabled: o.disabled === true,
    disabledByAdmin: o.disabled_by_admin === true,
    expiresAt: str(o.expires_at),
    allowedModels: arr(o.allowed_models).map(str),
    quota: parseQuota(o.quota),
    rateLimits: parseRateLimits(o.rate_limits),
    createdAt: str(o.created_at),
    lastUsedAt: str(o.last_used_at),
    scope: (str(o.scope) || 'TOKEN_SCOPE_UNSPECIFIED') as TokenScope,
  };
}

export interface CreatedToken {
  token: ApiToken;
  secret: string;
}

export function parseCreatedToken(v: unknown): CreatedToken {
  const o = obj(v);
  return { token: parseToken(o.token), secret: str(o.secret) };
}

export interface ModelPrice {
  model: string;
  promptPer1k: number;
  completionPer1k: number;
  effectiveFrom: string;
}

export function parsePrice(v: unknown): ModelPrice {
  const o = obj(v);
  return {
    model: str(o.model),
    promptPer1k: int64(o.prompt_micro_credits_per_1k),
    completionPer1k: int64(o.completion_micro_credits_per_1k),
    effectiveFrom: str(o.effective_from),
  };
}

export interface UsageRow {
  userId: string;
  tokenId: string;
  model: string;
  day: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  costMicroCredits: number;
}

export function parseUsageRow(v: unknown): UsageRow {
  const o = obj(v);
  return {
    userId: str(o.user_id),
    tokenId: str(o.token_id),
    model: str(o.model),
    day: str(o.day),
    requests: int64(o.requests),
    promptTokens: int64(o.prompt_tokens),
    completionTokens: int64(o.completion_tokens),
    costMicroCredits: int64(o.cost_micro_credits),
  };
}

export interface AuditEntry {
  entryId: string;
  actorUserId: string;
  action: string;
  target: string;
  detailsJson: string;
  at: string;
}

export function parseAudit(v: unknown): AuditEntry {
  const o = obj(v);
  return {
    entryId: str(o.entry_id),
    actorUserId: str(o.actor_user_id),
    action: str(o.action),
    target: str(o.target),
    detailsJson: str(o.details_json),
    at: str(o.at),
  };
}

/** AIModelSpec exactly as REST JSON carries it (proto names); kept raw so an edit round-trips. */
export type AIModelSpecJson = Json;

export interface AIModelStatus {
  state: string;
  reason: string;
  message: string;
  replicas: number;
  readyReplicas: number;
  observedGeneration: number;
}

export interface AIModel {
  name: string;
  namespace: string;
  spec: AIModelSpecJson;
  status: AIModelStatus;
  /** -1 when unknown */
  backlog: number;
  createTime: string;
  generation: number;
}

export function parseAIModel(v: unknown): AIModel {
  const o = obj(v);
  const s = obj(o.status);
  return {
    name: str(o.name),
    namespace: str(o.namespace),
    spec: obj(o.spec),
    status: {
      state: str(s.state),
      reason: str(s.reason),
      message: str(s.message),
      replicas: int64(s.replicas),
      readyReplicas: int64(s.ready_replicas),
      observedGeneration: int64(s.observed_generation),
    },
    backlog: int64(o.backlog, -1),
    createTime: str(o.create_time),
    generation: int64(o.generation),
  };
}

export interface AIModelEvent {
  type: string;
  reason: string;
  message: string;
  source: string;
  count: number;
  lastTime: string;
}

export function parseAIModelEvent(v: unknown): AIModelEvent {
  const o = obj(v);
  return {
    type: str(o.type),
    reason: str(o.reason),
    message: str(o.message),
    source: str(o.source),
    count: int64(o.count),
    lastTime: str(o.last_time),
  };
}

export interface Session {
  token: string;
  expiresAt: string;
  user: User;
}

export function parseLogin(v: unknown): Session {
  const o = obj(v);
  return { token: str(o.session_token), expiresAt: str(o.expires_at), user: parseUser(o.user) };
}

export function listOf<T>(v: unknown, key: string, parse: (x: unknown) => T): T[] {
  return arr(obj(v)[key]).map(parse);
}

export function nextPageToken(v: unknown): string {
  return str(obj(v).next_page_token);
}

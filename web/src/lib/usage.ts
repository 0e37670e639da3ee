// Usage aggregation for the usage page: totals, a breakdown by model/user/token/day, and a daily
// series with the days that had no traffic filled with zeros.

import type { UsageRow } from '../api/types';

export type Dimension = 'model' | 'user' | 'token' | 'day';
export type Metric = 'requests' | 'tokens' | 'cost';

export interface Totals {
  requests: number;
  promptTokens: number;
  completionTokens: number;
  tokens: number;
  costMicroCredits: number;
}

export interface Bucket extends Totals {
  key: string;
}

export function zero(): Totals {
  return { requests: 0, promptTokens: 0, completionTokens: 0, tokens: 0, costMicroCredits: 0 };
}

function add(t: Totals, r: UsageRow): void {
  t.requests += r.requests;
  t.promptTokens += r.promptTokens;
  t.completionTokens += r.completionTokens;
  t.tokens += r.promptTokens + r.completionTokens;
  t.costMicroCredits += r.costMicroCredits;
}

export function totals(rows: readonly UsageRow[]): Totals {
  const t = zero();
  for (const r of rows) add(t, r);
  return t;
}

export function keyOf(r: UsageRow, d: Dimension): string {
  switch (d) {
    case 'model':
      return r.model;
    case 'user':
      return r.userId;
    case 'token':
      return r.tokenId;
    case 'day':
      return r.day;
  }
}

export function metricOf(t: Totals, m: Metric): number {
  return m === 'requests' ? t.requests : m === 'tokens' ? t.tokens : t.costMicroCredits;
}

/** Rows summed per value of `d`; days in date order, the rest largest `sortBy` first. */
export function aggregate(rows: readonly UsageRow[], d: Dimension, sortBy: Metric = 'cost'): Bucket[] {
  const map = new Map<string, Bucket>();
  for (const r of rows) {
    const k = keyOf(r, d);
    let b = map.get(k);
    if (!b) {
      b = { key: k, ...zero() };
      map.set(k, b);
    }
    add(b, r);
  }
  const out = [...map.values()];
  if (d === 'day') out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  else out.sort((a, b) => metricOf(b, sortBy) - metricOf(a, sortBy) || (a.key < b.key ? -1 : 1));
  return out;
}

/** Every UTC day (YYYY-MM-DD) from `start` to `end` inclusive. */
export function daysBetween(start: string, end: string): string[] {
  const out: string[] = [];
  const a = Date.parse(`${start}T00:00:00Z`);
  const b = Date.parse(`${end}T00:00:00Z`);
  if (Number.isNaN(a) || Number.isNaN(b) || b < a) return out;
  for (let t = a; t <= b && out.length < 3700; t += 86_400_000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

/** One bucket per day of the range (zeros where nothing happened), summed over the other dimensions. */
export function dailySeries(rows: readonly UsageRow[], start: string, end: string): Bucket[] {
  const byDay = new Map(aggregate(rows, 'day').map((b) => [b.key, b]));
  return daysBetween(start, end).map((day) => byDay.get(day) ?? { key: day, ...zero() });
}

/** The top `n` keys of `d` by `m`, the rest summed as "other" (for a readable chart). */
export function topN(rows: readonly UsageRow[], d: Dimension, m: Metric, n: number): Bucket[] {
  const all = aggregate(rows, d, m);
  if (all.length <= n) return all;
  const rest = all.slice(n).reduce(
    (t, b) => {
      t.requests += b.requests;
      t.promptTokens += b.promptTokens;
      t.completionTokens += b.completionTokens;
      t.tokens += b.tokens;
      t.costMicroCredits += b.costMicroCredits;
      return t;
    },
    { key: '(other)', ...zero() },
  );
  return [...all.slice(0, n), rest];
}

/** The query's range as RFC 3339 (start of the first day to the start of the day after the last). */
export function rangeToTimestamps(start: string, end: string): { start: string; end: string } {
  const endNext = new Date(Date.parse(`${end}T00:00:00Z`) + 86_400_000).toISOString();
  return { start: new Date(Date.parse(`${start}T00:00:00Z`)).toISOString(), end: endNext };
}

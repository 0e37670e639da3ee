import { describe, expect, it } from 'vitest';
import type { UsageRow } from '../api/types';
import { aggregate, dailySeries, daysBetween, rangeToTimestamps, topN, totals } from './usage';

function row(over: Partial<UsageRow>): UsageRow {
  return { userId: '', tokenId: '', model: '', day: '', requests: 0, promptTokens: 0, completionTokens: 0, costMicroCredits: 0, ...over };
}

const rows = [
  row({ model: 'echo', day: '2026-11-02', requests: 2, promptTokens: 10, completionTokens: 5, costMicroCredits: 100 }),
  row({ model: 'gpt', day: '2026-11-02', requests: 1, promptTokens: 100, completionTokens: 50, costMicroCredits: 5000 }),
  row({ model: 'echo', day: '2026-11-04', requests: 3, promptTokens: 1, completionTokens: 1, costMicroCredits: 10 }),
];

describe('usage aggregation', () => {
  it('sums everything', () => {
    expect(totals(rows)).toEqual({ requests: 6, promptTokens: 111, completionTokens: 56, tokens: 167, costMicroCredits: 5110 });
  });

  it('groups by model, largest first by the chosen metric', () => {
    expect(aggregate(rows, 'model', 'cost').map((b) => [b.key, b.costMicroCredits])).toEqual([
      ['gpt', 5000],
      ['echo', 110],
    ]);
    expect(aggregate(rows, 'model', 'requests').map((b) => [b.key, b.requests])).toEqual([
      ['echo', 5],
      ['gpt', 1],
    ]);
  });

  it('fills the days without traffic with zeros, in order', () => {
    const s = dailySeries(rows, '2026-11-01', '2026-11-05');
    expect(s.map((b) => [b.key, b.requests])).toEqual([
      ['2026-11-01', 0],
      ['2026-11-02', 3],
      ['2026-11-03', 0],
      ['2026-11-04', 3],
      ['2026-11-05', 0],
    ]);
  });

  it('handles a year of daily rows', () => {
    const days = daysBetween('2025-12-01', '2026-11-30');
    expect(days.length).toBe(365);
    const year = days.flatMap((day, i) => [row({ model: 'a', day, requests: i }), row({ model: 'b', day, requests: 1 })]);
    const t0 = performance.now();
    const s = dailySeries(year, '2025-12-01', '2026-11-30');
    const by = aggregate(year, 'model', 'requests');
    expect(performance.now() - t0).toBeLessThan(200);
    expect(s.length).toBe(365);
    expect(s[364].requests).toBe(365);
    expect(by.map((b) => b.key)).toEqual(['a', 'b']);
  });

  it('keeps the top N and sums the rest as (other)', () => {
    const many = Array.from({ length: 5 }, (_, i) => row({ model: `m${i}`, requests: i + 1 }));
    expect(topN(many, 'model', 'requests', 2).map((b) => [b.key, b.requests])).toEqual([
      ['m4', 5],
      ['m3', 4],
      ['(other)', 6],
    ]);
  });

  it('turns a day range into RFC 3339 bounds covering the last day', () => {
    expect(rangeToTimestamps('2026-11-01', '2026-11-30')).toEqual({ start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' });
    expect(daysBetween('2026-11-05', '2026-11-01')).toEqual([]);
  });
});

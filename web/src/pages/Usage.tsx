// Requests, tokens and spend by model, user, key or day for a chosen range (POST /admin/v1/usage:query),
// drawn as plain SVG; the table pages through the rows (a year of days stays fast).

import { useMemo, useState } from 'react';
import type { UsageGroup } from '../api/client';
import { credits, todayUtc } from '../lib/format';
import { type Dimension, type Metric, aggregate, dailySeries, metricOf, rangeToTimestamps, topN, totals } from '../lib/usage';
import { BarChart } from '../ui/BarChart';
import { Empty, ErrorBox, Field, Loading, Pager, useAsync, useSlice } from '../ui/common';
import { useSession } from '../ui/session';

const GROUP: Record<Dimension, UsageGroup> = {
  model: 'USAGE_GROUP_BY_MODEL',
  user: 'USAGE_GROUP_BY_USER',
  token: 'USAGE_GROUP_BY_TOKEN',
  day: 'USAGE_GROUP_BY_DAY',
};

function fmt(m: Metric): (n: number) => string {
  return m === 'cost' ? (n) => credits(n) : (n) => (n >= 10_000 ? `${(n / 1000).toFixed(n >= 100_000 ? 0 : 1)}k` : String(Math.round(n)));
}

export default function Usage() {
  const { client, isAdmin } = useSession();
  const [start, setStart] = useState(todayUtc(-29));
  const [end, setEnd] = useState(todayUtc());
  const [by, setBy] = useState<Dimension>('model');
  const [metric, setMetric] = useState<Metric>('cost');
  const [query, setQuery] = useState({ start, end, by });

  const result = useAsync(() => {
    const r = rangeToTimestamps(query.start, query.end);
    const groupBy: UsageGroup[] = query.by === 'day' ? [GROUP.day] : [GROUP[query.by], GROUP.day];
    return client.queryUsage({ start: r.start, end: r.end, groupBy });
  }, [query]);

  const rows = result.data ?? [];
  const sum = useMemo(() => totals(rows), [rows]);
  const daily = useMemo(() => dailySeries(rows, query.start, query.end), [rows, query]);
  const breakdown = useMemo(() => (query.by === 'day' ? daily : aggregate(rows, query.by, metric)), [rows, daily, query.by, metric]);
  const top = useMemo(() => (query.by === 'day' ? [] : topN(rows, query.by, metric, 12)), [rows, query.by, metric]);
  const { rows: pageRows, pager } = useSlice(breakdown, 50);

  const preset = (days: number) => {
    const s = todayUtc(-(days - 1));
    const e = todayUtc();
    setStart(s);
    setEnd(e);
    setQuery({ start: s, end: e, by });
  };

  const dims: Dimension[] = isAdmin ? ['model', 'user', 'token', 'day'] : ['model', 'token', 'day'];
  const format = fmt(metric);
  return (
    <section>
      <h1>{isAdmin ? 'Usage' : 'My usage'}</h1>
      <form
        className="card row wrap"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery({ start, end, by });
        }}
        aria-label="Usage range"
        data-testid="usage-form"
      >
        <Field label="From">
          <input type="date" value={start} max={end} onChange={(e) => setStart(e.target.value)} required data-testid="usage-start" />
        </Field>
        <Field label="To">
          <input type="date" value={end} min={start} onChange={(e) => setEnd(e.target.value)} required data-testid="usage-end" />
        </Field>
        <Field label="By">
          <select value={by} onChange={(e) => setBy(e.target.value as Dimension)} data-testid="usage-by">
            {dims.map((d) => (
              <option key={d} value={d}>
                {d === 'token' ? 'key' : d}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Chart">
          <select value={metric} onChange={(e) => setMetric(e.target.value as Metric)}>
            <option value="cost">spend</option>
            <option value="requests">requests</option>
            <option value="tokens">tokens</option>
          </select>
        </Field>
        <button type="submit" className="primary" data-testid="usage-submit">
          Show
        </button>
        <span className="row">
          <button type="button" onClick={() => preset(7)}>
            7 days
          </button>
          <button type="button" onClick={() => preset(30)}>
            30 days
          </button>
          <button type="button" onClick={() => preset(365)}>
            1 year
          </button>
        </span>
      </form>
      <ErrorBox error={result.error} onRetry={result.reload} />
      {result.loading && !result.data ? (
        <Loading what="Loading usage" />
      ) : rows.length === 0 ? (
        !result.error && <Empty>No usage in this range.</Empty>
      ) : (
        <>
          <dl className="facts totals" data-testid="usage-totals">
            <dt>Requests</dt>
            <dd>{sum.requests.toLocaleString()}</dd>
            <dt>Tokens</dt>
            <dd>
              {sum.tokens.toLocaleString()} ({sum.promptTokens.toLocaleString()} prompt, {sum.completionTokens.toLocaleString()} completion)
            </dd>
            <dt>Spend</dt>
            <dd>{credits(sum.costMicroCredits)} credits</dd>
          </dl>
          <h2>Per day</h2>
          <BarChart bars={daily.map((d) => ({ label: d.key, value: metricOf(d, metric) }))} title={`${metric} per day`} format={format} />
          {top.length > 0 && (
            <>
              <h2>By {query.by === 'token' ? 'key' : query.by}</h2>
              <BarChart bars={top.map((b) => ({ label: b.key || '(none)', value: metricOf(b, metric) }))} title={`${metric} by ${query.by}`} format={format} height={160} />
            </>
          )}
          <table data-testid="usage-table">
            <thead>
              <tr>
                <th scope="col">{query.by === 'token' ? 'Key' : query.by[0].toUpperCase() + query.by.slice(1)}</th>
                <th scope="col">Requests</th>
                <th scope="col">Prompt tokens</th>
                <th scope="col">Completion tokens</th>
                <th scope="col">Spend (credits)</th>
              </tr>
            </thead>
            <tbody>
              {pageRows.map((b) => (
                <tr key={b.key}>
                  <td>{b.key || '(none)'}</td>
                  <td>{b.requests.toLocaleString()}</td>
                  <td>{b.promptTokens.toLocaleString()}</td>
                  <td>{b.completionTokens.toLocaleString()}</td>
                  <td>{credits(b.costMicroCredits)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager {...pager} label="Usage pages" />
        </>
      )}
    </section>
  );
}

import { RATE_LIMIT_FIELDS, type RateLimits } from '../api/types';

const LABELS: Record<(typeof RATE_LIMIT_FIELDS)[number], string> = {
  requests_per_minute: 'Requests / minute',
  requests_per_hour: 'Requests / hour',
  requests_per_day: 'Requests / day',
  tokens_per_minute: 'Tokens / minute',
  tokens_per_day: 'Tokens / day',
};

/** Rate-limit inputs as strings (empty: the platform default). */
export type RateLimitInputs = Record<(typeof RATE_LIMIT_FIELDS)[number], string>;

export function toInputs(r: RateLimits): RateLimitInputs {
  const out = {} as RateLimitInputs;
  for (const f of RATE_LIMIT_FIELDS) out[f] = r[f] === undefined ? '' : String(r[f]);
  return out;
}

export function fromInputs(i: RateLimitInputs): RateLimits {
  const out: RateLimits = {};
  for (const f of RATE_LIMIT_FIELDS) {
    const t = i[f].trim();
    if (/^\d+$/.test(t)) out[f] = Number(t);
  }
  return out;
}

export function RateLimitsEditor({ value, onChange }: { value: RateLimitInputs; onChange: (v: RateLimitInputs) => void }) {
  return (
    <fieldset className="grid">
      <legend>Rate limits (empty: platform default)</legend>
      {RATE_LIMIT_FIELDS.map((f) => (
        <label className="field" key={f}>
          <span>{LABELS[f]}</span>
          <input inputMode="numeric" value={value[f]} onChange={(e) => onChange({ ...value, [f]: e.target.value })} />
        </label>
      ))}
    </fieldset>
  );
}

// How numbers, credits and times are shown.

/** Micro-credits as credits (1 credit = 1,000,000 micro-credits). */
export function credits(micro: number | null): string {
  if (micro === null) return 'unlimited';
  const c = micro / 1_000_000;
  return c.toLocaleString(undefined, { maximumFractionDigits: Math.abs(c) < 1 ? 6 : 2 });
}

export function num(n: number | null): string {
  return n === null ? 'unlimited' : n.toLocaleString();
}

export function when(ts: string): string {
  if (!ts) return '—';
  const t = Date.parse(ts);
  if (Number.isNaN(t)) return ts;
  return new Date(t).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
}

export function todayUtc(offsetDays = 0): string {
  return new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);
}

/** A random idempotency key for a top-up (retries of the same click apply once). */
export function randomKey(): string {
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
}

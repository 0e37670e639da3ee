// Shared pieces: loading/error/empty states, server paging by page token, client-side paging,
// form fields, the once-shown secret.

import { type ReactNode, useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, friendlyMessage } from '../api/errors';
import type { Page } from '../api/client';

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.friendly;
  if (e instanceof Error) return friendlyMessage(0, e.message);
  return String(e);
}

export function ErrorBox({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      {errorText(error)}
      {onRetry && (
        <button type="button" className="link" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `fn` now and whenever `deps` change; `reload` runs it again. Results of stale runs are dropped. */
export function useAsync<T>(fn: () => Promise<T>, deps: unknown[]): AsyncState<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const run = useRef(0);
  useEffect(() => {
    const mine = ++run.current;
    setLoading(true);
    fn().then(
      (d) => {
        if (mine !== run.current) return;
        setData(d);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (mine !== run.current) return;
        setError(e);
        setLoading(false);
      },
    );
  }, [...deps, tick]);
  return { data, error, loading, reload: useCallback(() => setTick((t) => t + 1), []) };
}

/** A server-paged list: the page tokens seen so far make "previous" possible. */
export function usePagedList<T>(fetchPage: (token: string) => Promise<Page<T>>, deps: unknown[]) {
  const [tokens, setTokens] = useState<string[]>(['']);
  const current = tokens[tokens.length - 1];
  const state = useAsync(() => fetchPage(current), [current, ...deps]);
  useEffect(() => setTokens(['']), deps);
  const next = state.data?.nextPageToken ?? '';
  return {
    ...state,
    items: state.data?.items ?? [],
    page: tokens.length,
    hasNext: !!next,
    hasPrev: tokens.length > 1,
    next: () => next && setTokens((t) => [...t, next]),
    prev: () => setTokens((t) => (t.length > 1 ? t.slice(0, -1) : t)),
  };
}

export function Pager(props: { page: number; pages?: number; hasPrev: boolean; hasNext: boolean; prev: () => void; next: () => void; label?: string }) {
  return (
    <nav className="pager" aria-label={props.label ?? 'Pages'}>
      <button type="button" onClick={props.prev} disabled={!props.hasPrev}>
        ← Previous
      </button>
      <span>
        Page {props.page}
        {props.pages ? ` of ${props.pages}` : ''}
      </span>
      <button type="button" onClick={props.next} disabled={!props.hasNext}>
        Next →
      </button>
    </nav>
  );
}

/** Client-side paging of a long list (only one page of rows is in the document). */
export function useSlice<T>(items: readonly T[], size: number) {
  const [page, setPage] = useState(1);
  const pages = Math.max(1, Math.ceil(items.length / size));
  const p = Math.min(page, pages);
  return {
    rows: items.slice((p - 1) * size, p * size),
    pager: { page: p, pages, hasPrev: p > 1, hasNext: p < pages, prev: () => setPage(p - 1), next: () => setPage(p + 1) },
    reset: () => setPage(1),
  };
}

export function Field(props: { label: string; children: ReactNode; error?: string; hint?: string }) {
  return (
    <label className="field">
      <span>{props.label}</span>
      {props.children}
      {props.hint && <small className="muted">{props.hint}</small>}
      {props.error && (
        <small className="field-error" role="alert">
          {props.error}
        </small>
      )}
    </label>
  );
}

export function SecretBox({ secret, onDone }: { secret: string; onDone: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <div className="secret" role="region" aria-label="New API key">
      <p>
        <strong>Copy this key now:</strong> it is shown only once.
      </p>
      <code data-testid="shown-secret">{secret}</code>
      <div className="row">
        <button
          type="button"
          onClick={() => {
            void navigator.clipboard?.writeText(secret).then(() => setCopied(true));
          }}
        >
          {copied ? 'Copied' : 'Copy'}
        </button>
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
    </div>
  );
}

/** A number input's value: null when blank. */
export function parseOptional(s: string): number | null {
  const t = s.trim();
  if (!t) return null;
  const n = Number(t);
  return Number.isFinite(n) ? Math.trunc(n) : null;
}

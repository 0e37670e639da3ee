// A user's API keys: create (the secret shown once), roll, disable/enable, delete, allow-list and
// limits. Admins also set rate limits and may create admin-scoped keys.

import { type FormEvent, Fragment, useState } from 'react';
import type { ApiToken, CreatedToken, TokenScope } from '../api/types';
import { credits, num, when } from '../lib/format';
import { Empty, ErrorBox, Field, Loading, SecretBox, errorText, parseOptional, useAsync } from './common';
import { RateLimitsEditor, fromInputs, toInputs } from './RateLimitsEditor';
import { useSession } from './session';

function models(s: string): string[] {
  return s
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
}

function expiryIso(days: string): string {
  const n = parseOptional(days);
  return n && n > 0 ? new Date(Date.now() + n * 86_400_000).toISOString() : '';
}

function CreateKey({ userId, admin, onCreated }: { userId: string; admin: boolean; onCreated: (t: CreatedToken) => void }) {
  const { client } = useSession();
  const [name, setName] = useState('');
  const [days, setDays] = useState('');
  const [allowed, setAllowed] = useState('');
  const [limitCredits, setLimitCredits] = useState('');
  const [limitTokens, setLimitTokens] = useState('');
  const [scope, setScope] = useState<TokenScope>('TOKEN_SCOPE_INFERENCE');
  const [rates, setRates] = useState(toInputs({}));
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const c = parseOptional(limitCredits);
      const created = await client.createToken(userId, {
        name: name.trim(),
        expiresAt: expiryIso(days),
        allowedModels: models(allowed),
        quotaLimitMicroCredits: c === null ? null : c * 1_000_000,
        quotaLimitTokens: parseOptional(limitTokens),
        rateLimits: admin ? fromInputs(rates) : undefined,
        scope,
      });
      setName('');
      onCreated(created);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" onSubmit={submit} data-testid="create-key-form" aria-labelledby={`ck-${userId}`}>
      <h2 id={`ck-${userId}`}>Create a key</h2>
      <div className="grid">
        <Field label="Name">
          <input required value={name} onChange={(e) => setName(e.target.value)} data-testid="create-key-name" />
        </Field>
        <Field label="Expires in (days)" hint="Empty: never.">
          <input inputMode="numeric" value={days} onChange={(e) => setDays(e.target.value)} />
        </Field>
        <Field label="Allowed models" hint="Comma-separated; empty: every model.">
          <input value={allowed} onChange={(e) => setAllowed(e.target.value)} />
        </Field>
        <Field label="Credit limit (credits)">
          <input inputMode="numeric" value={limitCredits} onChange={(e) => setLimitCredits(e.target.value)} />
        </Field>
        <Field label="Token limit">
          <input inputMode="numeric" value={limitTokens} onChange={(e) => setLimitTokens(e.target.value)} />
        </Field>
        <Field label="Scope">
          <select value={scope} onChange={(e) => setScope(e.target.value as TokenScope)}>
            <option value="TOKEN_SCOPE_INFERENCE">inference (/v1)</option>
            <option value="TOKEN_SCOPE_ADMIN">admin API</option>
          </select>
        </Field>
      </div>
      {admin && <RateLimitsEditor value={rates} onChange={setRates} />}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <button type="submit" className="primary" disabled={busy} data-testid="create-key-submit">
        Create key
      </button>
    </form>
  );
}

function EditKey({ token, admin, onSaved, onCancel }: { token: ApiToken; admin: boolean; onSaved: () => void; onCancel: () => void }) {
  const { client } = useSession();
  const [allowed, setAllowed] = useState(token.allowedModels.join(', '));
  const [limitCredits, setLimitCredits] = useState(token.quota.limitMicroCredits === null ? '' : String(token.quota.limitMicroCredits / 1_000_000));
  const [limitTokens, setLimitTokens] = useState(token.quota.limitTokens === null ? '' : String(token.quota.limitTokens));
  const [rates, setRates] = useState(toInputs(token.rateLimits));
  const [error, setError] = useState('');

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError('');
    try {
      const c = parseOptional(limitCredits);
      const t = parseOptional(limitTokens);
      await client.updateToken(token.tokenId, {
        allowedModels: models(allowed),
        quotaLimitMicroCredits: c === null ? undefined : c * 1_000_000,
        quotaLimitTokens: t === null ? undefined : t,
        rateLimits: admin ? fromInputs(rates) : undefined,
      });
      onSaved();
    } catch (err) {
      setError(errorText(err));
    }
  };

  return (
    <form className="card inset" onSubmit={submit} aria-label={`Edit ${token.name}`}>
      <div className="grid">
        <Field label="Allowed models" hint="Comma-separated; empty: every model.">
          <input value={allowed} onChange={(e) => setAllowed(e.target.value)} />
        </Field>
        <Field label="Credit limit (credits)">
          <input inputMode="numeric" value={limitCredits} onChange={(e) => setLimitCredits(e.target.value)} />
        </Field>
        <Field label="Token limit">
          <input inputMode="numeric" value={limitTokens} onChange={(e) => setLimitTokens(e.target.value)} />
        </Field>
      </div>
      {admin && <RateLimitsEditor value={rates} onChange={setRates} />}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <div className="row">
        <button type="submit" className="primary">
          Save
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export function TokenManager({ userId, admin }: { userId: string; admin: boolean }) {
  const { client } = useSession();
  const [version, setVersion] = useState(0);
  const list = useAsync(() => client.listTokens(userId), [userId, version]);
  const [secret, setSecret] = useState('');
  const [editing, setEditing] = useState('');
  const [error, setError] = useState<unknown>(null);
  const refresh = () => setVersion((v) => v + 1);

  const act = async (f: () => Promise<unknown>) => {
    setError(null);
    try {
      await f();
      refresh();
    } catch (err) {
      setError(err);
    }
  };

  const tokens = list.data ?? [];
  return (
    <div>
      {secret ? (
        <SecretBox secret={secret} onDone={() => setSecret('')} />
      ) : (
        <CreateKey
          userId={userId}
          admin={admin}
          onCreated={(c) => {
            setSecret(c.secret);
            refresh();
          }}
        />
      )}
      <ErrorBox error={error || list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading keys" />
      ) : tokens.length === 0 && !list.error ? (
        <Empty>No keys yet.</Empty>
      ) : (
        <table data-testid="keys-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Key</th>
              <th scope="col">Scope</th>
              <th scope="col">State</th>
              <th scope="col">Models</th>
              <th scope="col">Spent / limit</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {tokens.map((t) => (
              <Fragment key={t.tokenId}>
                <tr data-testid={`key-row-${t.tokenId}`}>
                  <td>{t.name}</td>
                  <td>
                    <code>{t.prefix}…</code>
                  </td>
                  <td>{t.scope === 'TOKEN_SCOPE_ADMIN' ? 'admin' : 'inference'}</td>
                  <td>{t.disabled ? <span className="bad">disabled{t.disabledByAdmin ? ' by admin' : ''}</span> : 'active'}</td>
                  <td>{t.allowedModels.length ? t.allowedModels.join(', ') : 'all'}</td>
                  <td>
                    {credits(t.quota.usedMicroCredits)} / {credits(t.quota.limitMicroCredits)}
                    <br />
                    <small className="muted">
                      {num(t.quota.usedTokens)} / {num(t.quota.limitTokens)} tokens
                    </small>
                  </td>
                  <td>{t.expiresAt ? when(t.expiresAt) : 'never'}</td>
                  <td>{when(t.lastUsedAt)}</td>
                  <td className="actions">
                    <button
                      type="button"
                      onClick={() =>
                        void act(async () => {
                          if (confirm(`Roll "${t.name}"? The old secret stops working.`)) setSecret((await client.rollToken(t.tokenId)).secret);
                        })
                      }
                    >
                      Roll
                    </button>
                    <button type="button" onClick={() => void act(() => client.updateToken(t.tokenId, { disabled: !t.disabled }))}>
                      {t.disabled ? 'Enable' : 'Disable'}
                    </button>
                    <button type="button" onClick={() => setEditing(editing === t.tokenId ? '' : t.tokenId)} aria-expanded={editing === t.tokenId}>
                      Limits
                    </button>
                    <button
                      type="button"
                      className="danger"
                      onClick={() => void act(async () => (confirm(`Delete "${t.name}"?`) ? client.deleteToken(t.tokenId) : undefined))}
                    >
                      Delete
                    </button>
                  </td>
                </tr>
                {editing === t.tokenId && (
                  <tr>
                    <td colSpan={9}>
                      <EditKey
                        token={t}
                        admin={admin}
                        onCancel={() => setEditing('')}
                        onSaved={() => {
                          setEditing('');
                          refresh();
                        }}
                      />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

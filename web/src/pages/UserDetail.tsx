import { type FormEvent, useState } from 'react';
import type { Role, User } from '../api/types';
import { credits, num, randomKey, when } from '../lib/format';
import { ErrorBox, Field, Loading, errorText, parseOptional, useAsync } from '../ui/common';
import { RateLimitsEditor, fromInputs, toInputs } from '../ui/RateLimitsEditor';
import { Link } from '../ui/router';
import { useSession } from '../ui/session';
import { TokenManager } from '../ui/TokenManager';

function EditUser({ user, onSaved }: { user: User; onSaved: (u: User) => void }) {
  const { client } = useSession();
  const [displayName, setDisplayName] = useState(user.displayName);
  const [role, setRole] = useState<Role>(user.role);
  const [tier, setTier] = useState(user.tier);
  const [limitCredits, setLimitCredits] = useState(user.quota.limitMicroCredits === null ? '' : String(user.quota.limitMicroCredits / 1_000_000));
  const [limitTokens, setLimitTokens] = useState(user.quota.limitTokens === null ? '' : String(user.quota.limitTokens));
  const [rates, setRates] = useState(toInputs(user.rateLimits));
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [ok, setOk] = useState('');

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError('');
    setOk('');
    try {
      const c = parseOptional(limitCredits);
      const t = parseOptional(limitTokens);
      const u = await client.updateUser(user.userId, {
        displayName,
        role,
        tier: tier || undefined,
        quotaLimitMicroCredits: c === null ? undefined : c * 1_000_000,
        quotaLimitTokens: t === null ? undefined : t,
        rateLimits: fromInputs(rates),
        password: password || undefined,
      });
      setPassword('');
      setOk('Saved.');
      onSaved(u);
    } catch (err) {
      setError(errorText(err));
    }
  };

  return (
    <form className="card" onSubmit={submit} aria-labelledby="edit-user-title" data-testid="edit-user-form">
      <h2 id="edit-user-title">Settings</h2>
      <div className="grid">
        <Field label="Display name">
          <input value={displayName} onChange={(e) => setDisplayName(e.target.value)} />
        </Field>
        <Field label="Role">
          <select value={role} onChange={(e) => setRole(e.target.value as Role)} data-testid="edit-user-role">
            <option value="ROLE_MEMBER">member</option>
            <option value="ROLE_ADMIN">admin</option>
          </select>
        </Field>
        <Field label="Tier">
          <input value={tier} onChange={(e) => setTier(e.target.value)} />
        </Field>
        <Field label="Credit limit (credits)" hint="Empty: leave as is.">
          <input inputMode="numeric" value={limitCredits} onChange={(e) => setLimitCredits(e.target.value)} />
        </Field>
        <Field label="Token limit" hint="Empty: leave as is.">
          <input inputMode="numeric" value={limitTokens} onChange={(e) => setLimitTokens(e.target.value)} />
        </Field>
        <Field label="New password" hint="Ends every session of the user.">
          <input type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} />
        </Field>
      </div>
      <RateLimitsEditor value={rates} onChange={setRates} />
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {ok && <p className="ok">{ok}</p>}
      <button type="submit" className="primary">
        Save
      </button>
    </form>
  );
}

function TopUp({ user, onDone }: { user: User; onDone: () => void }) {
  const { client } = useSession();
  const [amount, setAmount] = useState('');
  const [tokens, setTokens] = useState('');
  const [key, setKey] = useState(randomKey);
  const [msg, setMsg] = useState('');
  const [error, setError] = useState('');

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError('');
    setMsg('');
    try {
      const q = await client.topUp({ userId: user.userId }, (parseOptional(amount) ?? 0) * 1_000_000, parseOptional(tokens) ?? 0, key);
      setMsg(`Limit now ${credits(q.limitMicroCredits)} credits, ${num(q.limitTokens)} tokens.`);
      setAmount('');
      setTokens('');
      setKey(randomKey());
      onDone();
    } catch (err) {
      setError(errorText(err)); // the same idempotency key is kept: a retry applies once
    }
  };

  return (
    <form className="card" onSubmit={submit} aria-labelledby="topup-title" data-testid="topup-form">
      <h2 id="topup-title">Top up</h2>
      <div className="grid">
        <Field label="Credits">
          <input inputMode="numeric" value={amount} onChange={(e) => setAmount(e.target.value)} />
        </Field>
        <Field label="Tokens">
          <input inputMode="numeric" value={tokens} onChange={(e) => setTokens(e.target.value)} />
        </Field>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {msg && <p className="ok">{msg}</p>}
      <button type="submit" className="primary">
        Top up
      </button>
    </form>
  );
}

export default function UserDetail({ userId }: { userId: string }) {
  const { client, session } = useSession();
  const [version, setVersion] = useState(0);
  const user = useAsync(() => client.getUser(userId), [userId, version]);
  const [error, setError] = useState<unknown>(null);
  const u = user.data;
  const reload = () => setVersion((v) => v + 1);

  const toggle = async () => {
    if (!u) return;
    setError(null);
    try {
      await client.updateUser(u.userId, { disabled: !u.disabled });
      reload();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section>
      <p>
        <Link to="/users">← Users</Link>
      </p>
      <ErrorBox error={user.error || error} onRetry={user.reload} />
      {!u ? (
        user.loading && <Loading what="Loading the user" />
      ) : (
        <>
          <h1>{u.email}</h1>
          <dl className="facts">
            <dt>Id</dt>
            <dd>
              <code>{u.userId}</code>
            </dd>
            <dt>Role</dt>
            <dd>{u.role === 'ROLE_ADMIN' ? 'admin' : 'member'}</dd>
            <dt>State</dt>
            <dd>{u.disabled ? 'disabled' : 'active'}</dd>
            <dt>Spent</dt>
            <dd>
              {credits(u.quota.usedMicroCredits)} of {credits(u.quota.limitMicroCredits)} credits; {num(u.quota.usedTokens)} of{' '}
              {num(u.quota.limitTokens)} tokens
            </dd>
            <dt>Created</dt>
            <dd>{when(u.createdAt)}</dd>
          </dl>
          {u.userId !== session?.user.userId && (
            <button type="button" className={u.disabled ? '' : 'danger'} onClick={() => void toggle()} data-testid="toggle-user">
              {u.disabled ? 'Enable user' : 'Disable user'}
            </button>
          )}
          <EditUser key={`${u.userId}-${version}`} user={u} onSaved={reload} />
          <TopUp user={u} onDone={reload} />
          <h2>API keys</h2>
          <TokenManager userId={u.userId} admin />
        </>
      )}
    </section>
  );
}

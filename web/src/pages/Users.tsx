import { type FormEvent, useState } from 'react';
import type { Role } from '../api/types';
import { credits, num } from '../lib/format';
import { Empty, ErrorBox, Field, Loading, Pager, errorText, parseOptional, usePagedList } from '../ui/common';
import { Link } from '../ui/router';
import { useSession } from '../ui/session';

function CreateUser({ onCreated }: { onCreated: () => void }) {
  const { client } = useSession();
  const [email, setEmail] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<Role>('ROLE_MEMBER');
  const [limitCredits, setLimitCredits] = useState('');
  const [limitTokens, setLimitTokens] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const [done, setDone] = useState('');

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    setDone('');
    try {
      const credit = parseOptional(limitCredits);
      const u = await client.createUser({
        email: email.trim(),
        displayName: displayName.trim(),
        password,
        role,
        limitMicroCredits: credit === null ? null : credit * 1_000_000,
        limitTokens: parseOptional(limitTokens),
      });
      setDone(`Created ${u.email} (${u.userId}).`);
      setEmail('');
      setDisplayName('');
      setPassword('');
      onCreated();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" onSubmit={submit} data-testid="create-user-form" aria-labelledby="create-user-title">
      <h2 id="create-user-title">Create a user</h2>
      <div className="grid">
        <Field label="Email">
          <input type="email" required value={email} onChange={(e) => setEmail(e.target.value)} data-testid="create-user-email" />
        </Field>
        <Field label="Display name">
          <input value={displayName} onChange={(e) => setDisplayName(e.target.value)} />
        </Field>
        <Field label="Password" hint="Leave empty for a user who signs in with API keys only.">
          <input type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} data-testid="create-user-password" />
        </Field>
        <Field label="Role">
          <select value={role} onChange={(e) => setRole(e.target.value as Role)} data-testid="create-user-role">
            <option value="ROLE_MEMBER">member</option>
            <option value="ROLE_ADMIN">admin</option>
          </select>
        </Field>
        <Field label="Credit limit (credits)" hint="Empty: unlimited.">
          <input inputMode="numeric" value={limitCredits} onChange={(e) => setLimitCredits(e.target.value)} />
        </Field>
        <Field label="Token limit" hint="Empty: unlimited.">
          <input inputMode="numeric" value={limitTokens} onChange={(e) => setLimitTokens(e.target.value)} />
        </Field>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p className="ok" role="status">
          {done}
        </p>
      )}
      <button type="submit" className="primary" disabled={busy} data-testid="create-user-submit">
        Create user
      </button>
    </form>
  );
}

export default function Users() {
  const { client } = useSession();
  const [version, setVersion] = useState(0);
  const list = usePagedList((t) => client.listUsers(t, 50), [version]);
  return (
    <section>
      <h1>Users</h1>
      <CreateUser onCreated={() => setVersion((v) => v + 1)} />
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading users" />
      ) : list.items.length === 0 && !list.error ? (
        <Empty>No users yet.</Empty>
      ) : (
        <table data-testid="users-table">
          <thead>
            <tr>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">State</th>
              <th scope="col">Spent / limit (credits)</th>
              <th scope="col">Tokens used / limit</th>
            </tr>
          </thead>
          <tbody>
            {list.items.map((u) => (
              <tr key={u.userId}>
                <td>
                  <Link to={`/users/${encodeURIComponent(u.userId)}`}>{u.email}</Link>
                  {u.displayName && <span className="muted"> {u.displayName}</span>}
                </td>
                <td>{u.role === 'ROLE_ADMIN' ? 'admin' : 'member'}</td>
                <td>{u.disabled ? <span className="bad">disabled</span> : 'active'}</td>
                <td>
                  {credits(u.quota.usedMicroCredits)} / {credits(u.quota.limitMicroCredits)}
                </td>
                <td>
                  {num(u.quota.usedTokens)} / {num(u.quota.limitTokens)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Pager page={list.page} hasPrev={list.hasPrev} hasNext={list.hasNext} prev={list.prev} next={list.next} label="User pages" />
    </section>
  );
}

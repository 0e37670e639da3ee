// The AIModel list: live status, replicas, readiness and backlog, polled every 5 s while the tab is
// visible; filter and client-side pages of 50 rows keep 500+ models fast.

import { useEffect, useMemo, useState } from 'react';
import { collectAll } from '../api/client';
import type { AIModel } from '../api/types';
import { when } from '../lib/format';
import { Empty, ErrorBox, Loading, Pager, errorText, useAsync, useSlice } from '../ui/common';
import { Link } from '../ui/router';
import { useSession } from '../ui/session';

const POLL_MS = 5000;

function Events({ name }: { name: string }) {
  const { client } = useSession();
  const ev = useAsync(() => client.modelEvents(name), [name]);
  if (ev.loading && !ev.data) return <Loading what="Loading events" />;
  if (ev.error) return <ErrorBox error={ev.error} onRetry={ev.reload} />;
  const list = ev.data ?? [];
  if (!list.length) return <Empty>No events.</Empty>;
  return (
    <table className="inset">
      <thead>
        <tr>
          <th scope="col">Type</th>
          <th scope="col">Reason</th>
          <th scope="col">Message</th>
          <th scope="col">Source</th>
          <th scope="col">Count</th>
          <th scope="col">Last</th>
        </tr>
      </thead>
      <tbody>
        {list.map((e, i) => (
          <tr key={i} className={e.type === 'Warning' ? 'warn' : ''}>
            <td>{e.type}</td>
            <td>{e.reason}</td>
            <td>{e.message}</td>
            <td>{e.source}</td>
            <td>{e.count}</td>
            <td>{when(e.lastTime)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function stateClass(m: AIModel): string {
  if (m.status.state === 'Running' && m.status.readyReplicas > 0) return 'good';
  if (m.status.state === 'Failed') return 'bad';
  return 'pending';
}

export default function Models() {
  const { client } = useSession();
  const [models, setModels] = useState<AIModel[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [filter, setFilter] = useState('');
  const [open, setOpen] = useState('');
  const [version, setVersion] = useState(0);
  const [actionError, setActionError] = useState('');

  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const ctl = new AbortController();
    const poll = async () => {
      if (document.visibilityState !== 'hidden') {
        try {
          const all = await collectAll((t) => client.listModels(t, 200, ctl.signal));
          if (stopped) return;
          all.sort((a, b) => a.name.localeCompare(b.name));
          setModels(all);
          setError(null);
        } catch (e) {
          if (stopped) return;
          setError(e);
        }
      }
      if (!stopped) timer = window.setTimeout(() => void poll(), POLL_MS);
    };
    void poll();
    return () => {
      stopped = true;
      ctl.abort();
      clearTimeout(timer);
    };
  }, [client, version]);

  const shown = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const list = models ?? [];
    return f ? list.filter((m) => m.name.toLowerCase().includes(f) || String(m.spec.model ?? '').toLowerCase().includes(f)) : list;
  }, [models, filter]);
  const { rows, pager, reset } = useSlice(shown, 50);

  const remove = async (name: string) => {
    if (!confirm(`Delete model "${name}"? Its workers stop.`)) return;
    setActionError('');
    try {
      await client.deleteModel(name);
      setVersion((v) => v + 1);
    } catch (e) {
      setActionError(errorText(e));
    }
  };

  return (
    <section>
      <div className="row spread">
        <h1>Models</h1>
        <Link to="/models/new" className="button primary" data-testid="new-model">
          New model
        </Link>
      </div>
      <label className="field inline">
        <span>Filter</span>
        <input
          type="search"
          value={filter}
          onChange={(e) => {
            setFilter(e.target.value);
            reset();
          }}
          placeholder="name or model"
        />
      </label>
      <ErrorBox error={error} onRetry={() => setVersion((v) => v + 1)} />
      {actionError && (
        <p className="error" role="alert">
          {actionError}
        </p>
      )}
      {models === null ? (
        !error && <Loading what="Loading models" />
      ) : shown.length === 0 ? (
        <Empty>{filter ? 'No model matches.' : 'No models yet: create one.'}</Empty>
      ) : (
        <>
          <p className="muted">
            {shown.length} model{shown.length === 1 ? '' : 's'}; refreshed every {POLL_MS / 1000} s.
          </p>
          <table data-testid="models-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Model</th>
                <th scope="col">Type</th>
                <th scope="col">State</th>
                <th scope="col">Ready / replicas</th>
                <th scope="col">Backlog</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((m) => (
                <ModelRow key={m.name} m={m} open={open === m.name} toggle={() => setOpen(open === m.name ? '' : m.name)} remove={() => void remove(m.name)} />
              ))}
            </tbody>
          </table>
          <Pager {...pager} label="Model pages" />
        </>
      )}
    </section>
  );
}

function ModelRow({ m, open, toggle, remove }: { m: AIModel; open: boolean; toggle: () => void; remove: () => void }) {
  return (
    <>
      <tr data-testid={`model-row-${m.name}`}>
        <td>
          <Link to={`/models/${encodeURIComponent(m.name)}`}>{m.name}</Link>
        </td>
        <td>{String(m.spec.model ?? '')}</td>
        <td>{String(m.spec.type ?? '')}</td>
        <td data-testid={`model-status-${m.name}`} title={[m.status.reason, m.status.message].filter(Boolean).join(': ')}>
          <span className={`badge ${stateClass(m)}`}>{m.status.state || 'Unknown'}</span>
          {m.status.reason && <small className="muted"> {m.status.reason}</small>}
        </td>
        <td>
          {m.status.readyReplicas} / {m.status.replicas}
        </td>
        <td>{m.backlog < 0 ? '—' : m.backlog}</td>
        <td className="actions">
          <button type="button" onClick={toggle} aria-expanded={open}>
            Events
          </button>
          <button type="button" className="danger" onClick={remove}>
            Delete
          </button>
        </td>
      </tr>
      {open && (
        <tr>
          <td colSpan={7}>
            <Events name={m.name} />
          </td>
        </tr>
      )}
    </>
  );
}

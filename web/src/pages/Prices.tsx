import { type FormEvent, useState } from 'react';
import { when } from '../lib/format';
import { Empty, ErrorBox, Field, Loading, Pager, errorText, parseOptional, useAsync, useSlice } from '../ui/common';
import { useSession } from '../ui/session';

export default function Prices() {
  const { client } = useSession();
  const [version, setVersion] = useState(0);
  const list = useAsync(() => client.listPrices(), [version]);
  const [model, setModel] = useState('');
  const [prompt, setPrompt] = useState('');
  const [completion, setCompletion] = useState('');
  const [from, setFrom] = useState('');
  const [error, setError] = useState('');
  const { rows, pager } = useSlice(list.data ?? [], 50);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError('');
    try {
      await client.setPrice(model.trim(), parseOptional(prompt) ?? 0, parseOptional(completion) ?? 0, from ? new Date(from).toISOString() : undefined);
      setVersion((v) => v + 1);
    } catch (err) {
      setError(errorText(err));
    }
  };

  return (
    <section>
      <h1>Prices</h1>
      <form className="card" onSubmit={submit} aria-labelledby="price-title" data-testid="price-form">
        <h2 id="price-title">Set a price</h2>
        <div className="grid">
          <Field label="Model">
            <input required value={model} onChange={(e) => setModel(e.target.value)} />
          </Field>
          <Field label="Prompt (micro-credits / 1k tokens)">
            <input required inputMode="numeric" value={prompt} onChange={(e) => setPrompt(e.target.value)} />
          </Field>
          <Field label="Completion (micro-credits / 1k tokens)">
            <input required inputMode="numeric" value={completion} onChange={(e) => setCompletion(e.target.value)} />
          </Field>
          <Field label="Effective from" hint="Empty: now.">
            <input type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} />
          </Field>
        </div>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary">
          Set price
        </button>
      </form>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading prices" />
      ) : !list.data?.length ? (
        !list.error && <Empty>No prices set.</Empty>
      ) : (
        <>
          <table data-testid="prices-table">
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Prompt / 1k</th>
                <th scope="col">Completion / 1k</th>
                <th scope="col">Effective from</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((p) => (
                <tr key={`${p.model}-${p.effectiveFrom}`}>
                  <td>{p.model}</td>
                  <td>{p.promptPer1k.toLocaleString()}</td>
                  <td>{p.completionPer1k.toLocaleString()}</td>
                  <td>{when(p.effectiveFrom)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Pager {...pager} label="Price pages" />
        </>
      )}
    </section>
  );
}

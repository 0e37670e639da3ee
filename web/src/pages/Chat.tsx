// Chat against the inference API with an inference key (pasted, or a chat key created here and kept
// in sessionStorage): streamed answers with a stop button, markdown, usage per answer, retry, and
// conversations kept in localStorage.

import { type FormEvent, type KeyboardEvent, memo, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ApiError } from '../api/errors';
import { listModelIds, streamChat } from '../api/inference';
import { type Conversation, type Turn, loadConversations, newConversation, saveConversations, titleFrom, toMessages } from '../lib/conversations';
import { renderMarkdown } from '../lib/markdown';
import { ErrorBox, Field, Loading, SecretBox, errorText, useAsync } from '../ui/common';
import { useSession } from '../ui/session';

const KEY_STORAGE = 'uplion.console.chatKey';

function chatError(e: unknown): string {
  if (e instanceof ApiError) {
    switch (e.status) {
      case 401:
        return `The chat key was refused (${e.message}). Paste another key or create a new chat key.`;
      case 403:
        return `This key may not use this model (${e.message}).`;
      case 429:
        return `Rate limit or quota reached (${e.message}). Wait and retry, or ask an admin for more quota.`;
      case 503:
        return `The model is not available right now (${e.message}). Retry shortly.`;
      default:
        return e.friendly;
    }
  }
  return errorText(e);
}

const Markdown = memo(function Markdown({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  return <div className="md" dangerouslySetInnerHTML={{ __html: html }} />;
});

function KeyPanel({ onKey }: { onKey: (k: string) => void }) {
  const { client, session } = useSession();
  const [pasted, setPasted] = useState('');
  const [secret, setSecret] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const create = async () => {
    if (!session) return;
    setBusy(true);
    setError('');
    try {
      const c = await client.createToken(session.user.userId, {
        name: `console chat ${new Date().toISOString().slice(0, 16)}`,
        expiresAt: new Date(Date.now() + 24 * 3_600_000).toISOString(),
        scope: 'TOKEN_SCOPE_INFERENCE',
      });
      setSecret(c.secret);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  if (secret) return <SecretBox secret={secret} onDone={() => onKey(secret)} />;
  return (
    <div className="card">
      <h2>An API key for chatting</h2>
      <p className="muted">
        Chat calls the inference API with one of your keys (not your sign-in session). It stays in this tab only (sessionStorage).
      </p>
      <form
        className="row wrap"
        onSubmit={(e: FormEvent) => {
          e.preventDefault();
          if (pasted.trim()) onKey(pasted.trim());
        }}
      >
        <Field label="Paste a key">
          <input type="password" autoComplete="off" value={pasted} onChange={(e) => setPasted(e.target.value)} data-testid="chat-key-input" />
        </Field>
        <button type="submit" className="primary" data-testid="chat-key-use">
          Use this key
        </button>
        <span className="muted">or</span>
        <button type="button" onClick={() => void create()} disabled={busy} data-testid="chat-key-create">
          Create a chat key (expires in 24 h)
        </button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

function TurnView({ turn, last, streaming, onRetry }: { turn: Turn; last: boolean; streaming: boolean; onRetry: () => void }) {
  return (
    <div className={`turn ${turn.role}`} data-testid={`turn-${turn.role}`}>
      <div className="who">{turn.role === 'user' ? 'You' : 'Assistant'}</div>
      {turn.role === 'user' ? <p className="plain">{turn.content}</p> : turn.content ? <Markdown text={turn.content} /> : !turn.error && streaming && <Loading what="Thinking" />}
      {turn.error && (
        <p className="error" role="alert">
          {turn.error}
        </p>
      )}
      {turn.stopped && <p className="muted">Stopped.</p>}
      {turn.usage && (
        <p className="usage muted" data-testid="turn-usage">
          {turn.usage.promptTokens} prompt + {turn.usage.completionTokens} completion = {turn.usage.totalTokens} tokens
        </p>
      )}
      {turn.role === 'assistant' && last && !streaming && (
        <button type="button" className="link" onClick={onRetry} data-testid="chat-retry">
          Retry
        </button>
      )}
    </div>
  );
}

export default function Chat() {
  const [apiKey, setApiKey] = useState(() => sessionStorage.getItem(KEY_STORAGE) ?? '');
  const [convs, setConvs] = useState<Conversation[]>(() => loadConversations(localStorage));
  const [currentId, setCurrentId] = useState(() => convs[0]?.id ?? '');
  const [model, setModel] = useState('');
  const [input, setInput] = useState('');
  const [streaming, setStreaming] = useState(false);
  const abortRef = useRef<AbortController | null>(null);
  const endRef = useRef<HTMLDivElement>(null);

  const models = useAsync(async (): Promise<string[]> => (apiKey ? listModelIds(apiKey) : []), [apiKey]);
  const current = convs.find((c) => c.id === currentId);

  useEffect(() => {
    if (!model && models.data?.length) setModel(current?.model && models.data.includes(current.model) ? current.model : models.data[0]);
  }, [models.data, model, current]);
  useEffect(() => saveConversations(localStorage, convs), [convs]);
  useEffect(() => {
    // a block body: Chromium 156 returns a Promise from scrollIntoView, which React would call as the cleanup
    endRef.current?.scrollIntoView?.({ block: 'end' });
  }, [current?.turns.length, streaming]);
  useEffect(() => () => abortRef.current?.abort(), []);

  const takeKey = (k: string) => {
    sessionStorage.setItem(KEY_STORAGE, k);
    setApiKey(k);
  };
  const forgetKey = () => {
    sessionStorage.removeItem(KEY_STORAGE);
    setApiKey('');
    setModel('');
  };

  const update = useCallback((id: string, f: (c: Conversation) => Conversation) => {
    setConvs((list) => list.map((c) => (c.id === id ? f(c) : c)));
  }, []);

  /** Streams an answer to `history` (which ends with the user's message) into conversation `id`. */
  const answer = async (id: string, history: Turn[]) => {
    const ctl = new AbortController();
    abortRef.current = ctl;
    setStreaming(true);
    update(id, (c) => ({ ...c, model, turns: [...history, { role: 'assistant', content: '' }], updatedAt: Date.now() }));
    const patchLast = (f: (t: Turn) => Turn) =>
      update(id, (c) => ({ ...c, turns: c.turns.map((t, i) => (i === c.turns.length - 1 ? f(t) : t)), updatedAt: Date.now() }));
    try {
      let pending = '';
      let flushAt = 0;
      for await (const ev of streamChat(apiKey, model, toMessages(history), ctl.signal)) {
        if (ev.kind === 'delta') {
          pending += ev.text;
          if (Date.now() >= flushAt) {
            const add = pending;
            pending = '';
            flushAt = Date.now() + 50; // at most ~20 renders a second
            patchLast((t) => ({ ...t, content: t.content + add }));
          }
        } else if (ev.kind === 'usage') {
          const usage = ev.usage;
          patchLast((t) => ({ ...t, usage }));
        }
      }
      if (pending) {
        const add = pending;
        patchLast((t) => ({ ...t, content: t.content + add }));
      }
    } catch (e) {
      if ((e as Error)?.name === 'AbortError') patchLast((t) => ({ ...t, stopped: true }));
      else {
        patchLast((t) => ({ ...t, error: chatError(e) }));
        if (e instanceof ApiError && e.status === 401) models.reload();
      }
    } finally {
      abortRef.current = null;
      setStreaming(false);
    }
  };

  const send = (e?: FormEvent) => {
    e?.preventDefault();
    const text = input.trim();
    if (!text || streaming || !model) return;
    let conv = current;
    if (!conv) {
      conv = { ...newConversation(model), title: titleFrom(text) };
      const fresh = conv;
      setConvs((l) => [fresh, ...l]);
      setCurrentId(conv.id);
    }
    const history: Turn[] = [...conv.turns.filter((t) => !(t.role === 'assistant' && t.error)), { role: 'user', content: text }];
    setInput('');
    void answer(conv.id, history);
  };

  const retry = () => {
    if (!current || streaming) return;
    const turns = [...current.turns];
    while (turns.length && turns[turns.length - 1].role === 'assistant') turns.pop();
    if (turns.length) void answer(current.id, turns);
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    }
  };

  if (!apiKey) {
    return (
      <section>
        <h1>Chat</h1>
        <KeyPanel onKey={takeKey} />
      </section>
    );
  }

  return (
    <section className="chat">
      <aside className="conversations" aria-label="Conversations">
        <button
          type="button"
          className="primary"
          onClick={() => setCurrentId('')}
          disabled={streaming}
          data-testid="chat-new"
        >
          New chat
        </button>
        <ul>
          {convs.map((c) => (
            <li key={c.id}>
              <button type="button" className={c.id === currentId ? 'link current' : 'link'} aria-current={c.id === currentId} onClick={() => setCurrentId(c.id)} disabled={streaming}>
                {c.title}
              </button>
              <button type="button" className="link" aria-label={`Delete ${c.title}`} onClick={() => setConvs((l) => l.filter((x) => x.id !== c.id))} disabled={streaming}>
                ×
              </button>
            </li>
          ))}
        </ul>
        <button type="button" className="link" onClick={forgetKey}>
          Use another key
        </button>
      </aside>
      <div className="thread">
        <div className="row">
          <Field label="Model">
            <select value={model} onChange={(e) => setModel(e.target.value)} disabled={streaming || !models.data?.length} data-testid="chat-model">
              {(models.data ?? []).map((m) => (
                <option key={m}>{m}</option>
              ))}
            </select>
          </Field>
          {models.loading && <Loading what="Loading models" />}
        </div>
        {models.error ? <p className="error" role="alert">{chatError(models.error)}</p> : null}
        {!models.loading && !models.error && models.data?.length === 0 && <ErrorBox error={new Error('No model is available to this key.')} />}
        <div className="messages" aria-live="polite" data-testid="chat-messages">
          {(current?.turns ?? []).map((t, i, all) => (
            <TurnView key={i} turn={t} last={i === all.length - 1} streaming={streaming} onRetry={retry} />
          ))}
          <div ref={endRef} />
        </div>
        <form className="composer" onSubmit={send}>
          <label className="field grow">
            <span>Message</span>
            <textarea
              rows={3}
              value={input}
              onChange={(e) => setInput(e.target.value)}
              onKeyDown={onKeyDown}
              placeholder="Ask something (Enter sends, Shift+Enter for a new line)"
              data-testid="chat-input"
            />
          </label>
          {streaming ? (
            <button type="button" className="danger" onClick={() => abortRef.current?.abort()} data-testid="chat-stop">
              Stop
            </button>
          ) : (
            <button type="submit" className="primary" disabled={!input.trim() || !model} data-testid="chat-send">
              Send
            </button>
          )}
        </form>
      </div>
    </section>
  );
}

import { describe, expect, it } from 'vitest';
import { type Conversation, type KeyValueStore, STORAGE_KEY, loadConversations, saveConversations, titleFrom, toMessages } from './conversations';

function memory(limit = Infinity): KeyValueStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => {
      if (v.length > limit) throw new Error('QuotaExceededError');
      data.set(k, v);
    },
  };
}

function conv(id: string, updatedAt: number, text = 'x'): Conversation {
  return { id, title: id, model: 'echo', turns: [{ role: 'user', content: text }], updatedAt };
}

describe('conversations', () => {
  it('saves and loads newest first', () => {
    const s = memory();
    saveConversations(s, [conv('a', 1), conv('b', 2)]);
    expect(loadConversations(s).map((c) => c.id)).toEqual(['b', 'a']);
  });

  it('survives junk in storage', () => {
    const s = memory();
    s.setItem(STORAGE_KEY, '{not json');
    expect(loadConversations(s)).toEqual([]);
    s.setItem(STORAGE_KEY, JSON.stringify([{ id: 1 }, conv('ok', 1)]));
    expect(loadConversations(s).map((c) => c.id)).toEqual(['ok']);
  });

  it('drops the oldest when storage is full', () => {
    const s = memory(1000);
    const big = 'y'.repeat(300);
    saveConversations(s, [conv('old', 1, big), conv('mid', 2, big), conv('new', 3, big), conv('newest', 4, big)]);
    const kept = loadConversations(s).map((c) => c.id);
    expect(kept[0]).toBe('newest');
    expect(kept).not.toContain('old');
  });

  it('sends finished turns only and makes short titles', () => {
    expect(
      toMessages([
        { role: 'user', content: 'q' },
        { role: 'assistant', content: '', error: 'boom' },
        { role: 'assistant', content: 'a' },
      ]),
    ).toEqual([
      { role: 'user', content: 'q' },
      { role: 'assistant', content: 'a' },
    ]);
    expect(titleFrom('  hello\n world ')).toBe('hello world');
    expect(titleFrom('x'.repeat(100)).length).toBe(48);
  });
});

// Chat conversations kept in the browser's localStorage (per browser profile, never sent anywhere).

import type { Usage } from '../api/inference';

export interface Turn {
  role: 'user' | 'assistant';
  content: string;
  usage?: Usage;
  error?: string;
  stopped?: boolean;
}

export interface Conversation {
  id: string;
  title: string;
  model: string;
  turns: Turn[];
  updatedAt: number;
}

export const STORAGE_KEY = 'uplion.console.conversations';
const MAX_CONVERSATIONS = 50;

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export function loadConversations(store: KeyValueStore): Conversation[] {
  try {
    const raw = store.getItem(STORAGE_KEY);
    const parsed: unknown = raw ? JSON.parse(raw) : [];
    if (!Array.isArray(parsed)) return [];
    return parsed
      .filter((c): c is Conversation => !!c && typeof c === 'object' && typeof c.id === 'string' && Array.isArray(c.turns))
      .sort((a, b) => b.updatedAt - a.updatedAt);
  } catch {
    return [];
  }
}

/** Saves the newest conversations (at most 50); when storage is full, drops the oldest and retries. */
export function saveConversations(store: KeyValueStore, list: Conversation[]): void {
  let keep = [...list].sort((a, b) => b.updatedAt - a.updatedAt).slice(0, MAX_CONVERSATIONS);
  while (keep.length) {
    try {
      store.setItem(STORAGE_KEY, JSON.stringify(keep));
      return;
    } catch {
      keep = keep.slice(0, keep.length - 1);
    }
  }
  try {
    store.setItem(STORAGE_KEY, '[]');
  } catch {
    /* storage unavailable: conversations live in memory only */
  }
}

export function newConversation(model: string, now = Date.now()): Conversation {
  return { id: `c${now.toString(36)}${Math.random().toString(36).slice(2, 8)}`, title: 'New chat', model, turns: [], updatedAt: now };
}

export function titleFrom(text: string): string {
  const t = text.trim().replace(/\s+/g, ' ');
  return t.length > 48 ? `${t.slice(0, 47)}…` : t || 'New chat';
}

/** The messages to send: every finished turn (errors and empty answers left out). */
export function toMessages(turns: readonly Turn[]): { role: 'user' | 'assistant'; content: string }[] {
  return turns.filter((t) => !t.error && t.content).map((t) => ({ role: t.role, content: t.content }));
}

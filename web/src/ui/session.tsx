// The signed-in session (kept in sessionStorage: gone when the tab closes) and the admin client
// that sends its token.

import { createContext, type ReactNode, useCallback, useContext, useMemo, useState } from 'react';
import { AdminClient } from '../api/client';
import type { Session } from '../api/types';

const KEY = 'uplion.console.session';

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    const s = raw ? (JSON.parse(raw) as Session) : null;
    if (s && s.expiresAt && Date.parse(s.expiresAt) < Date.now()) return null;
    return s;
  } catch {
    return null;
  }
}

interface Ctx {
  session: Session | null;
  client: AdminClient;
  isAdmin: boolean;
  signedIn: (s: Session) => void;
  signOut: (notice?: string) => Promise<void>;
  notice: string;
}

const SessionContext = createContext<Ctx | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session | null>(load);
  const [notice, setNotice] = useState('');
  const holder = useMemo(() => ({ token: session?.token ?? '' }), []);
  holder.token = session?.token ?? '';

  const drop = useCallback((msg: string) => {
    sessionStorage.removeItem(KEY);
    holder.token = '';
    setNotice(msg);
    setSession(null);
  }, [holder]);

  const client = useMemo(
    () => new AdminClient({ token: () => holder.token, onUnauthorized: () => drop('Your session ended. Sign in again.') }),
    [holder, drop],
  );

  const signedIn = useCallback((s: Session) => {
    sessionStorage.setItem(KEY, JSON.stringify(s));
    holder.token = s.token;
    setNotice('');
    setSession(s);
  }, [holder]);

  const signOut = useCallback(async (msg = '') => {
    try {
      if (holder.token) await client.logout();
    } catch {
      /* the session is dropped here either way */
    }
    sessionStorage.removeItem('uplion.console.chatKey');
    drop(msg);
  }, [client, drop, holder]);

  const value = useMemo(
    () => ({ session, client, isAdmin: session?.user.role === 'ROLE_ADMIN', signedIn, signOut, notice }),
    [session, client, signedIn, signOut, notice],
  );
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Ctx {
  const c = useContext(SessionContext);
  if (!c) throw new Error('useSession outside SessionProvider');
  return c;
}

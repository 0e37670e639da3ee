// The shell: sign-in, the navigation for the user's role, and the page for the current path.

import { lazy, Suspense, useEffect } from 'react';
import { Login } from './pages/Login';
import { Loading } from './ui/common';
import { Link, match, navigate, usePath } from './ui/router';
import { SessionProvider, useSession } from './ui/session';

const Users = lazy(() => import('./pages/Users'));
const UserDetail = lazy(() => import('./pages/UserDetail'));
const Keys = lazy(() => import('./pages/Keys'));
const Models = lazy(() => import('./pages/Models'));
const ModelEditor = lazy(() => import('./pages/ModelEditor'));
const Prices = lazy(() => import('./pages/Prices'));
const Usage = lazy(() => import('./pages/Usage'));
const Audit = lazy(() => import('./pages/Audit'));
const Chat = lazy(() => import('./pages/Chat'));

interface NavItem {
  to: string;
  label: string;
  admin: boolean;
}

const NAV: NavItem[] = [
  { to: '/users', label: 'Users', admin: true },
  { to: '/models', label: 'Models', admin: true },
  { to: '/prices', label: 'Prices', admin: true },
  { to: '/usage', label: 'Usage', admin: false },
  { to: '/audit', label: 'Audit log', admin: true },
  { to: '/keys', label: 'My keys', admin: false },
  { to: '/chat', label: 'Chat', admin: false },
];

function Page({ path, isAdmin }: { path: string; isAdmin: boolean }) {
  let m: Record<string, string> | null;
  if (isAdmin) {
    if (path === '/users') return <Users />;
    if ((m = match('/users/:id', path))) return <UserDetail userId={m.id} />;
    if (path === '/models') return <Models />;
    if (path === '/models/new') return <ModelEditor />;
    if ((m = match('/models/:name', path))) return <ModelEditor name={m.name} />;
    if (path === '/prices') return <Prices />;
    if (path === '/audit') return <Audit />;
  }
  if (path === '/usage') return <Usage />;
  if (path === '/keys') return <Keys />;
  if (path === '/chat') return <Chat />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        No page at <code>{path}</code>. <Link to={isAdmin ? '/users' : '/chat'}>Go to the start page</Link>.
      </p>
    </section>
  );
}

function Shell() {
  const { session, isAdmin, signOut } = useSession();
  const path = usePath();
  const atStart = path === '/' || path === '/login';
  useEffect(() => {
    if (session && atStart) navigate(isAdmin ? '/users' : '/chat', true);
  }, [session, atStart, isAdmin]);
  if (!session) return <Login />;
  if (atStart) return null;
  const items = NAV.filter((n) => isAdmin || !n.admin);
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span className="brand">uplion</span>
        <nav aria-label="Main">
          {items.map((n) => (
            <Link key={n.to} to={n.to} aria-current={path.startsWith(n.to) ? 'page' : undefined} data-testid={`nav-${n.to.slice(1)}`}>
              {n.label}
            </Link>
          ))}
        </nav>
        <span className="who">
          {session.user.email} ({isAdmin ? 'admin' : 'member'})
          <button type="button" className="link" onClick={() => void signOut()} data-testid="logout">
            Sign out
          </button>
        </span>
      </header>
      <main id="main">
        <Suspense fallback={<Loading />}>
          <Page path={path} isAdmin={isAdmin} />
        </Suspense>
      </main>
    </div>
  );
}

export function App() {
  return (
    <SessionProvider>
      <Shell />
    </SessionProvider>
  );
}

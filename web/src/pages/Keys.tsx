import { useSession } from '../ui/session';
import { TokenManager } from '../ui/TokenManager';

export default function Keys() {
  const { session, isAdmin } = useSession();
  if (!session) return null;
  return (
    <section>
      <h1>My API keys</h1>
      <p className="muted">Keys for the OpenAI-compatible API at <code>/v1</code>. A new key's secret is shown once.</p>
      <TokenManager userId={session.user.userId} admin={isAdmin} />
    </section>
  );
}

import { when } from '../lib/format';
import { Empty, ErrorBox, Loading, Pager, usePagedList } from '../ui/common';
import { useSession } from '../ui/session';

export default function Audit() {
  const { client } = useSession();
  const list = usePagedList((t) => client.listAudit(t, 50), []);
  return (
    <section>
      <h1>Audit log</h1>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading the audit log" />
      ) : list.items.length === 0 && !list.error ? (
        <Empty>Nothing recorded yet.</Empty>
      ) : (
        <table data-testid="audit-table">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {list.items.map((e) => (
              <tr key={e.entryId}>
                <td>{when(e.at)}</td>
                <td>
                  <code>{e.actorUserId}</code>
                </td>
                <td>{e.action}</td>
                <td>
                  <code>{e.target}</code>
                </td>
                <td>
                  <code className="details">{e.detailsJson}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Pager page={list.page} hasPrev={list.hasPrev} hasNext={list.hasNext} prev={list.prev} next={list.next} label="Audit pages" />
    </section>
  );
}

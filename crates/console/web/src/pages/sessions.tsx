import { useState } from "preact/hooks";
import { api, query } from "../api";
import { DataTable, ErrorMessage, Link, formatBytes, formatTime, useLoad } from "../components/common";
import { navigate, useLocation } from "../router";
import { isAdmin } from "../session";
import type { Me, Page, Session } from "../types";

/** The filters live in the address, so a filtered list can be bookmarked and shared. */
export function SessionsPage({ me }: { me: Me }) {
  const { search } = useLocation();
  const filters = {
    live: search.get("live") ?? "",
    user: search.get("user") ?? "",
    workspace_id: search.get("workspace_id") ?? "",
    since: search.get("since") ?? "",
    until: search.get("until") ?? "",
  };
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const key = JSON.stringify(filters);
  const page = useLoad(
    (signal) =>
      api.get<Page<Session>>(
        `/sessions${query({
          live: filters.live || undefined,
          user: filters.user || undefined,
          workspace_id: filters.workspace_id || undefined,
          since: filters.since ? new Date(filters.since).toISOString() : undefined,
          until: filters.until ? new Date(filters.until).toISOString() : undefined,
          limit: 50,
          cursor,
        })}`,
        signal,
      ),
    [key, cursor],
  );
  const apply = (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const next: Record<string, string> = {};
    for (const [name, value] of form.entries()) if (typeof value === "string" && value) next[name] = value;
    setCursor(undefined);
    navigate(`/sessions${query(next)}`);
  };
  return (
    <section>
      <h1>Sessions</h1>
      <form class="filters" onSubmit={apply} aria-label="Filter sessions">
        <label for="f-live">Show</label>
        <select id="f-live" name="live" value={filters.live}>
          <option value="">All</option>
          <option value="true">Live only</option>
          <option value="false">Ended only</option>
        </select>
        {isAdmin(me) ? (
          <>
            <label for="f-user">User</label>
            <input id="f-user" name="user" value={filters.user} autocomplete="off" />
          </>
        ) : null}
        <label for="f-ws">Workspace id</label>
        <input id="f-ws" name="workspace_id" value={filters.workspace_id} autocomplete="off" />
        <label for="f-since">From</label>
        <input id="f-since" name="since" type="datetime-local" value={filters.since} />
        <label for="f-until">To</label>
        <input id="f-until" name="until" type="datetime-local" value={filters.until} />
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <ErrorMessage error={page.error} />
      {page.value ? <SessionTable sessions={page.value.items} /> : page.error ? null : <p aria-busy="true">Loading…</p>}
      <div class="actions">
        {cursor ? (
          <button type="button" class="secondary" onClick={() => setCursor(undefined)}>
            First page
          </button>
        ) : null}
        {page.value?.next_cursor ? (
          <button type="button" class="secondary" onClick={() => setCursor(page.value?.next_cursor ?? undefined)}>
            Older sessions
          </button>
        ) : null}
      </div>
    </section>
  );
}

export function SessionTable({ sessions }: { sessions: Session[] }) {
  if (!sessions.length) return <p class="empty">No sessions match.</p>;
  return (
    <DataTable
      caption="Sessions"
      columns={[
        { label: "Started" },
        { label: "User" },
        { label: "Workspace" },
        { label: "Kind" },
        { label: "From", wide: true },
        { label: "State" },
        { label: "Traffic", wide: true },
      ]}
    >
          {sessions.map((s) => (
            <tr key={s.id} data-session={s.id}>
              <th scope="row">
                <Link to={`/sessions/${s.id}`}>{formatTime(s.started_at)}</Link>
              </th>
              <td>{s.username}</td>
              <td>{s.workspace}</td>
              <td>{s.kind}</td>
              <td class="wide-only">{s.client_addr}</td>
              <td>{s.live ? <span class="badge state-running">live</span> : <span class="badge">ended</span>}</td>
              <td class="wide-only">
                ↑{formatBytes(s.bytes_in)} ↓{formatBytes(s.bytes_out)}
              </td>
            </tr>
          ))}
    </DataTable>
  );
}

import { useState } from "preact/hooks";
import { api } from "../api";
import { ConfirmDialog, DataTable, ErrorMessage, Link, RowButton, StateBadge, formatTime } from "../components/common";
import { isAdmin } from "../session";
import type { Me, Workspace } from "../types";
import { useWorkspaces } from "../workspaces-live";

export function WorkspacesPage({ me }: { me: Me }) {
  const admin = isAdmin(me);
  const [owner, setOwner] = useState<string | undefined>(undefined);
  const live = useWorkspaces(owner);
  return (
    <section>
      <div class="page-head">
        <h1>Workspaces</h1>
        <Link to="/workspaces/new" class="button">
          New workspace
        </Link>
      </div>
      {admin ? (
        <form
          class="filters"
          onSubmit={(e) => {
            e.preventDefault();
            const value = new FormData(e.currentTarget).get("owner");
            setOwner(typeof value === "string" && value.trim() ? value.trim() : undefined);
          }}
        >
          <label for="owner">Owner</label>
          <input id="owner" name="owner" placeholder={me.user.username} autocomplete="off" />
          <button type="submit" class="secondary">
            Show
          </button>
        </form>
      ) : null}
      <p class="live-status" aria-live="polite">
        {live.connected ? "Live" : "Connecting…"}
      </p>
      <ErrorMessage error={live.error} />
      {live.value ? <WorkspaceTable workspaces={live.value} showOwner={admin} /> : <p aria-busy="true">Loading…</p>}
    </section>
  );
}

export function WorkspaceTable({ workspaces, showOwner }: { workspaces: Workspace[]; showOwner: boolean }) {
  if (workspaces.length === 0) {
    return (
      <p class="empty">
        No workspaces yet. <Link to="/workspaces/new">Create one</Link> from a blueprint.
      </p>
    );
  }
  return (
    <DataTable
      caption="Workspaces and their states"
      columns={[
        ...(showOwner ? [{ label: "Owner" }] : []),
        { label: "Name" },
        { label: "State" },
        { label: "Blueprint" },
        { label: "Last activity", wide: true },
        { label: "" },
      ]}
    >
      {workspaces.map((w) => (
        <WorkspaceRow key={w.id} workspace={w} showOwner={showOwner} />
      ))}
    </DataTable>
  );
}

function WorkspaceRow({ workspace: w, showOwner }: { workspace: Workspace; showOwner: boolean }) {
  return (
    <tr data-workspace={w.name}>
      {showOwner ? <td>{w.owner}</td> : null}
      <th scope="row">
        <Link to={`/workspaces/${w.id}`}>{w.name}</Link>
      </th>
      <td>
        <StateBadge state={w.state} />
        {w.reason && w.state === "failed" ? <small class="reason">{w.reason}</small> : null}
      </td>
      <td>{w.blueprint}</td>
      <td class="wide-only">{formatTime(w.last_activity_at)}</td>
      <td class="row-actions">
        <WorkspaceActions workspace={w} />
      </td>
    </tr>
  );
}

/** Start, stop, terminal and delete (after a confirmation), as the state allows. */
export function WorkspaceActions({ workspace: w, onDeleted }: { workspace: Workspace; onDeleted?: () => void }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const act = async (verb: "start" | "stop") => {
    setBusy(true);
    setError(null);
    try {
      await api.post(`/workspaces/${w.id}:${verb}`);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const running = w.state === "running" || w.state === "starting" || w.state === "pending";
  return (
    <div class="actions">
      <Link to={`/workspaces/${w.id}/terminal`} class="button">
        Terminal<span class="visually-hidden"> of {w.name}</span>
      </Link>
      {running ? (
        <RowButton label="Stop" subject={w.name} kind="secondary" disabled={busy || w.state === "stopping"} onClick={() => act("stop")} />
      ) : (
        <RowButton label="Start" subject={w.name} kind="secondary" disabled={busy || w.state === "deleting"} onClick={() => act("start")} />
      )}
      <RowButton label="Delete" subject={w.name} kind="danger" disabled={busy || w.state === "deleting"} onClick={() => setConfirming(true)} />
      <ConfirmDialog
        open={confirming}
        title={`Delete ${w.name}?`}
        confirmLabel="Delete workspace"
        danger
        onCancel={() => setConfirming(false)}
        onConfirm={async () => {
          setConfirming(false);
          setBusy(true);
          try {
            await api.del(`/workspaces/${w.id}`);
            onDeleted?.();
          } catch (e) {
            setError(e);
          } finally {
            setBusy(false);
          }
        }}
      >
        <p>
          The workspace <strong>{w.name}</strong> and its home directory are deleted for good. Running sessions in it
          end.
        </p>
      </ConfirmDialog>
      <ErrorMessage error={error} />
    </div>
  );
}

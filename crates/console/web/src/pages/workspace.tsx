import { ErrorMessage, CopyButton, Link, StateBadge, formatTime, formatDuration } from "../components/common";
import { navigate } from "../router";
import { useWorkspace } from "../workspaces-live";
import { WorkspaceActions } from "./workspaces";

export function WorkspacePage({ id }: { id: string }) {
  const live = useWorkspace(id);
  const w = live.value;
  if (live.gone) {
    return (
      <section>
        <h1>Workspace deleted</h1>
        <p>
          This workspace no longer exists. <Link to="/workspaces">Back to your workspaces</Link>.
        </p>
      </section>
    );
  }
  if (!w) {
    return (
      <section>
        <h1>Workspace</h1>
        <ErrorMessage error={live.error} />
        {live.error ? null : <p aria-busy="true">Loading…</p>}
      </section>
    );
  }
  const resources = (w.spec?.resources ?? {}) as Record<string, unknown>;
  return (
    <section>
      <div class="page-head">
        <h1>
          {w.owner}/{w.name}
        </h1>
        <StateBadge state={w.state} />
      </div>
      <WorkspaceActions workspace={w} onDeleted={() => navigate("/workspaces")} />
      {w.warnings.length ? (
        <ul class="warnings" aria-label="Warnings">
          {w.warnings.map((text) => (
            <li key={text}>{text}</li>
          ))}
        </ul>
      ) : null}
      {w.state === "failed" && w.reason ? <p class="error">{w.reason}</p> : null}
      <h2>Connect</h2>
      <div class="command">
        <code data-testid="ssh-command">{w.ssh_command}</code>
        <CopyButton text={w.ssh_command} label="Copy the SSH command" />
      </div>
      <p class="hint">
        To use <code>ssh {w.name}.k8shell</code>, VS Code Remote-SSH or JetBrains Gateway, run <code>k8shell config-ssh</code>{" "}
        once on your machine: it writes an SSH config entry for each of your workspaces.
      </p>
      <h2>Details</h2>
      <dl class="details">
        <dt>Blueprint</dt>
        <dd>{w.blueprint}</dd>
        <dt>Image</dt>
        <dd>
          <code>{w.image || "—"}</code>
        </dd>
        <dt>Runtime</dt>
        <dd>{w.runtime}</dd>
        {Object.entries(resources).map(([name, value]) => (
          <>
            <dt key={`${name}-t`}>{name === "cpu" ? "CPU" : name[0].toUpperCase() + name.slice(1)}</dt>
            <dd key={`${name}-d`}>{String(value)}</dd>
          </>
        ))}
        <dt>Stops when idle for</dt>
        <dd>{w.idle_timeout_seconds ? formatDuration(w.idle_timeout_seconds) : "never"}</dd>
        <dt>Last activity</dt>
        <dd>{formatTime(w.last_activity_at)}</dd>
        <dt>Created</dt>
        <dd>{formatTime(w.created_at)}</dd>
      </dl>
      <p>
        <Link to={`/sessions?workspace_id=${encodeURIComponent(w.id)}`}>Sessions in this workspace</Link>
      </p>
    </section>
  );
}

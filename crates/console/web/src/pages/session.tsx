import { useEffect, useState } from "preact/hooks";
import { api } from "../api";
import { ConfirmDialog, ErrorMessage, Link, formatBytes, formatDuration, formatTime, useLoad } from "../components/common";
import { LiveView } from "../player/live";
import { Player } from "../player/player";
import { isAdmin } from "../session";
import type { Me, SessionDetails } from "../types";

export function SessionPage({ id, me }: { id: string; me: Me }) {
  const details = useLoad((signal) => api.get<SessionDetails>(`/sessions/${encodeURIComponent(id)}`, signal), [id]);
  const [chosen, setChosen] = useState<string | null>(null);
  const [ending, setEnding] = useState(false);
  const [error, setError] = useState<unknown>(null);
  // Set when the live view being watched saw the session end: the page then says so above the
  // recording instead of the live view disappearing without a word.
  const [watchEnded, setWatchEnded] = useState(false);
  const d = details.value;
  // A live session, or a recording still being uploaded, grows: look again now and then.
  const growing = Boolean(d && (d.session.live || d.recordings.some((r) => !r.complete)));
  useEffect(() => {
    if (!growing) return;
    const timer = setInterval(() => details.reload(), 3000);
    return () => clearInterval(timer);
  }, [growing, id]);
  if (!d) {
    return (
      <section>
        <h1>Session</h1>
        <ErrorMessage error={details.error} />
        {details.error ? null : <p aria-busy="true">Loading…</p>}
      </section>
    );
  }
  const s = d.session;
  const recording = d.recordings.find((r) => r.id === chosen) ?? d.recordings[0];
  return (
    <section>
      <div class="page-head">
        <h1>
          Session of {s.username} in {s.workspace}
        </h1>
        {s.live ? <span class="badge state-running">live</span> : <span class="badge">ended</span>}
      </div>
      <dl class="details">
        <dt>Kind</dt>
        <dd>{s.kind}</dd>
        <dt>Client</dt>
        <dd>
          {s.client_addr} {s.client_version ? <code>{s.client_version}</code> : null}
        </dd>
        <dt>Started</dt>
        <dd>{formatTime(s.started_at)}</dd>
        <dt>Ended</dt>
        <dd>{s.live ? "still running" : `${formatTime(s.ended_at)}${s.end_reason ? ` (${s.end_reason})` : ""}`}</dd>
        <dt>Traffic</dt>
        <dd>
          {formatBytes(s.bytes_in)} in, {formatBytes(s.bytes_out)} out
        </dd>
      </dl>
      {s.live && isAdmin(me) ? (
        <div class="actions">
          <button type="button" class="danger" onClick={() => setEnding(true)}>
            End this session
          </button>
          <ConfirmDialog
            open={ending}
            title="End this session?"
            confirmLabel="End session"
            danger
            onCancel={() => setEnding(false)}
            onConfirm={async () => {
              setEnding(false);
              try {
                await api.post(`/sessions/${s.id}:terminate`, { reason: `ended from the console by ${me.user.username}` });
                details.reload();
              } catch (e) {
                setError(e);
              }
            }}
          >
            <p>{s.username} is told the session was ended, and disconnected.</p>
          </ConfirmDialog>
          <ErrorMessage error={error} />
        </div>
      ) : null}
      {s.live && isAdmin(me) ? (
        <>
          <h2>Live view</h2>
          <LiveView
            sessionId={s.id}
            onEnd={() => {
              setWatchEnded(true);
              details.reload();
            }}
          />
        </>
      ) : null}
      {!s.live && watchEnded ? (
        <p role="status" data-testid="live-status">
          The session ended. Its recording is below.
        </p>
      ) : null}
      <h2>Recordings</h2>
      {d.recordings.length === 0 ? (
        <p class="empty">This session has no terminal recording.</p>
      ) : (
        <>
          {d.recordings.length > 1 ? (
            <ul class="recording-list">
              {d.recordings.map((r) => (
                <li key={r.id}>
                  <button type="button" class="link" aria-pressed={r.id === recording?.id} onClick={() => setChosen(r.id)}>
                    Channel {r.channel} ({r.kind}), {formatDuration(r.duration)}
                  </button>
                </li>
              ))}
            </ul>
          ) : null}
          {recording ? <Player key={recording.id} recording={recording} /> : null}
        </>
      )}
      <h2>Timeline</h2>
      <ol class="timeline">
        {d.timeline.map((e) => (
          <li key={e.seq}>
            <time dateTime={e.at ?? undefined}>{formatTime(e.at)}</time> <strong>{e.kind}</strong>
            {e.channel ? <span> (channel {e.channel})</span> : null} <code>{summary(e.data)}</code>
          </li>
        ))}
      </ol>
      <p>
        <Link to="/sessions">All sessions</Link>
      </p>
    </section>
  );
}

function summary(data: Record<string, unknown>): string {
  const text = JSON.stringify(data);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

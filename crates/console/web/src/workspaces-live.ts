// Workspaces kept current from the API's server-sent events (a snapshot, then every change).
import { useEffect, useState } from "preact/hooks";
import { BASE, api, query } from "./api";
import type { Page, Workspace, WorkspaceEvent } from "./types";

/** Applies one event to a list: a deleted workspace leaves it, any other is put in its place. */
export function applyEvent(list: Workspace[], event: WorkspaceEvent): Workspace[] {
  const next = list.filter((w) => w.id !== event.workspace.id);
  if (event.workspace.state !== "deleted") next.push(event.workspace);
  return next.sort((a, b) => a.owner.localeCompare(b.owner) || a.name.localeCompare(b.name));
}

export type Live<T> = { value?: T; error?: unknown; connected: boolean };

/** Every workspace of the signed-in user (or of `owner`, for admins), live. */
export function useWorkspaces(owner?: string): Live<Workspace[]> {
  const [state, setState] = useState<Live<Workspace[]>>({ connected: false });
  useEffect(() => {
    let closed = false;
    const controller = new AbortController();
    api
      .get<Page<Workspace>>(`/workspaces${query({ owner, limit: 500 })}`, controller.signal)
      .then((page) => setState((s) => (s.value ? s : { ...s, value: applyAll(page.items) })))
      .catch((error: unknown) => !closed && setState((s) => ({ ...s, error })));
    const source = new EventSource(`${BASE}/workspaces/events${query({ owner })}`);
    source.addEventListener("open", () => setState((s) => ({ ...s, connected: true, error: undefined })));
    source.addEventListener("error", () => setState((s) => ({ ...s, connected: false })));
    source.addEventListener("workspace", (message) => {
      const event = JSON.parse((message as MessageEvent<string>).data) as WorkspaceEvent;
      setState((s) => ({ ...s, value: applyEvent(s.value ?? [], event) }));
    });
    return () => {
      closed = true;
      controller.abort();
      source.close();
    };
  }, [owner]);
  return state;
}

/** One workspace, live. */
export function useWorkspace(id: string): Live<Workspace> & { gone: boolean } {
  const [state, setState] = useState<Live<Workspace> & { gone: boolean }>({ connected: false, gone: false });
  useEffect(() => {
    const controller = new AbortController();
    api
      .get<Workspace>(`/workspaces/${encodeURIComponent(id)}`, controller.signal)
      .then((value) => setState((s) => ({ ...s, value: s.value ?? value })))
      .catch((error: unknown) => !controller.signal.aborted && setState((s) => ({ ...s, error })));
    const source = new EventSource(`${BASE}/workspaces/events${query({ id })}`);
    source.addEventListener("open", () => setState((s) => ({ ...s, connected: true })));
    source.addEventListener("error", () => setState((s) => ({ ...s, connected: false })));
    source.addEventListener("workspace", (message) => {
      const event = JSON.parse((message as MessageEvent<string>).data) as WorkspaceEvent;
      if (event.workspace.id !== id) return;
      setState((s) => ({ ...s, value: event.workspace, gone: event.workspace.state === "deleted" }));
    });
    return () => {
      controller.abort();
      source.close();
    };
  }, [id]);
  return state;
}

function applyAll(items: Workspace[]): Workspace[] {
  return items.reduce((list, workspace) => applyEvent(list, { workspace }), [] as Workspace[]);
}

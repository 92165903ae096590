// Small building blocks shared by the pages.
import type { ComponentChildren, JSX } from "preact";
import { useEffect, useId, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";
import { onLinkClick } from "../router";

export function Link(props: { to: string; children: ComponentChildren; class?: string; "aria-current"?: "page" }) {
  return (
    <a href={props.to} class={props.class} aria-current={props["aria-current"]} onClick={(e) => onLinkClick(e, props.to)}>
      {props.children}
    </a>
  );
}

/** An error for people: the API's `detail`, which says what to do. */
export function ErrorMessage({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof ApiError ? error.detail : error instanceof Error ? error.message : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

export function formatTime(at: string | null | undefined): string {
  if (!at) return "—";
  const date = new Date(at);
  if (Number.isNaN(date.getTime())) return at;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0");
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A state as a labelled badge (colour is never the only cue). */
export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state.toLowerCase()}`}>{state.toLowerCase()}</span>;
}

/** Copies `text`; says so for screen readers too. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      class="secondary"
      aria-label={label}
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setCopied(true);
          setTimeout(() => setCopied(false), 2000);
        } catch {
          setCopied(false);
        }
      }}
    >
      {copied ? "Copied" : "Copy"}
      <span class="visually-hidden" aria-live="polite">
        {copied ? " copied to the clipboard" : ""}
      </span>
    </button>
  );
}

/**
 * A modal question (the native <dialog>: focus is trapped and Escape cancels). `onConfirm` runs
 * when the person presses the confirming button.
 */
export function ConfirmDialog(props: {
  open: boolean;
  title: string;
  children: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  // Its own id: a list has one dialog per row, and a shared id named them all after the first.
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (props.open && !dialog.open) {
      if (typeof dialog.showModal === "function") dialog.showModal();
      else dialog.setAttribute("open", "");
    } else if (!props.open && dialog.open) {
      if (typeof dialog.close === "function") dialog.close();
      else dialog.removeAttribute("open");
    }
  }, [props.open]);
  return (
    <dialog ref={ref} aria-labelledby={titleId} onCancel={(e) => (e.preventDefault(), props.onCancel())}>
      <h2 id={titleId}>{props.title}</h2>
      <div>{props.children}</div>
      <div class="actions">
        <button type="button" class="secondary" onClick={props.onCancel}>
          Cancel
        </button>
        <button type="button" class={props.danger ? "danger" : ""} onClick={props.onConfirm}>
          {props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** Loads `load()` when `deps` change; gives the value, the error and a reload. */
export function useLoad<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]) {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    // A reload keeps showing the last value until the new one arrives.
    load(controller.signal)
      .then((v) => {
        setValue(v);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  return { value, setValue, error, loading, reload: () => setTick((t) => t + 1) };
}

export function Field(props: { label: string; id: string; hint?: string; children: JSX.Element }) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      {props.children}
      {props.hint ? (
        <small id={`${props.id}-hint`} class="hint">
          {props.hint}
        </small>
      ) : null}
    </div>
  );
}

/** A button on a row of a list: a short visible label, and for screen readers what it acts on. */
export function RowButton(props: {
  label: string;
  subject: string;
  kind?: "secondary" | "danger";
  disabled?: boolean;
  onClick: () => void;
}) {
  return (
    <button type="button" class={props.kind} disabled={props.disabled} onClick={props.onClick}>
      {props.label}
      <span class="visually-hidden"> {props.subject}</span>
    </button>
  );
}

/** A column heading; an empty label is an actions column, named for screen readers only. */
export type Column = { label: string; wide?: boolean };

/** A table that scrolls inside its own box on a narrow window. */
export function DataTable(props: { caption: string; columns: Column[]; children: ComponentChildren }) {
  return (
    <div class="table-wrap">
      <table>
        <caption class="visually-hidden">{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th key={c.label || "actions"} scope="col" class={c.wide ? "wide-only" : undefined}>
                {c.label || <span class="visually-hidden">Actions</span>}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}

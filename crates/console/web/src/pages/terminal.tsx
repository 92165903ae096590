import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { Link } from "../components/common";
import { type Phase, TerminalConnection, sessionResumeStore } from "../terminal/connection";
import { terminalTheme } from "../terminal/theme";

export function TerminalPage({ id }: { id: string }) {
  const host = useRef<HTMLDivElement>(null);
  const connection = useRef<TerminalConnection | null>(null);
  const [phase, setPhase] = useState<Phase>({ phase: "connecting", attempt: 1 });
  const [size, setSize] = useState("");

  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const dark = matchMedia("(prefers-color-scheme: dark)");
    const term = new Terminal({
      cursorBlink: true,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
      fontSize: 14,
      scrollback: 5000,
      theme: terminalTheme(dark.matches),
      screenReaderMode: false,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(element);
    fit.fit();
    const conn = new TerminalConnection(
      id,
      {
        write: (data) => term.write(data),
        reset: () => term.reset(),
        size: () => ({ cols: term.cols, rows: term.rows }),
        phase: setPhase,
      },
      (url) => new WebSocket(url),
      location,
      sessionResumeStore(id),
    );
    connection.current = conn;
    term.onData((data) => conn.input(data));
    term.onResize(({ cols, rows }) => {
      conn.resize(cols, rows);
      setSize(`${cols}×${rows}`);
    });
    setSize(`${term.cols}×${term.rows}`);
    // Ctrl+Shift+C copies the selection (Ctrl+C is the shell's interrupt); pasting is the
    // browser's own (Ctrl+V, Ctrl+Shift+V, the context menu).
    term.attachCustomKeyEventHandler((event) => {
      if (event.type === "keydown" && event.ctrlKey && event.shiftKey && event.code === "KeyC") {
        const selection = term.getSelection();
        if (selection) void navigator.clipboard?.writeText(selection);
        return false;
      }
      return true;
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(element);
    const themeChanged = () => (term.options.theme = terminalTheme(dark.matches));
    dark.addEventListener("change", themeChanged);
    conn.connect();
    term.focus();
    return () => {
      dark.removeEventListener("change", themeChanged);
      observer.disconnect();
      conn.close();
      term.dispose();
    };
  }, [id]);

  return (
    <section class="terminal-page">
      <div class="page-head">
        <h1>Terminal</h1>
        <Link to={`/workspaces/${id}`}>Workspace details</Link>
      </div>
      <p class={`terminal-status phase-${phase.phase}`} role="status" data-testid="terminal-status">
        {describe(phase)} {size ? <span class="size">{size}</span> : null}
        {phase.phase === "ended" || phase.phase === "reconnecting" ? (
          <button type="button" class="secondary" onClick={() => connection.current?.retry()}>
            {phase.phase === "ended" ? "New shell" : "Reconnect now"}
          </button>
        ) : null}
      </p>
      <div class="terminal" ref={host} role="region" aria-label="Terminal" data-testid="terminal" />
    </section>
  );
}

export function describe(phase: Phase): string {
  switch (phase.phase) {
    case "connecting":
      return phase.attempt > 1 ? `Connecting (attempt ${phase.attempt})…` : "Connecting…";
    case "starting":
      return phase.message.endsWith("…") ? phase.message : `${phase.message}…`;
    case "ready":
      return "Connected.";
    case "reconnecting":
      return `Connection lost; reconnecting in ${phase.inSeconds} s. Your shell keeps running meanwhile.`;
    case "ended":
      return phase.message;
  }
}

// The terminal WebSocket (`/api/v1/workspaces/{id}/terminal`): binary frames carry the
// terminal's bytes both ways, text frames JSON controls. Reconnects after a network blip with
// a growing delay; an exit or a refusal ends it.

export type Control =
  | { type: "status"; message: string }
  | { type: "ready"; session: string }
  | { type: "attached"; resume: string; resumed: boolean }
  | { type: "exit"; code?: number; signal?: string }
  | { type: "error"; message: string };

export type Phase =
  | { phase: "connecting"; attempt: number }
  | { phase: "starting"; message: string }
  | { phase: "ready"; session: string }
  | { phase: "reconnecting"; inSeconds: number; attempt: number }
  | { phase: "ended"; message: string };

/** Where the id of the shell to come back to is kept (the page's sessionStorage: a reload of
 * the tab comes back to the same shell too). */
export interface ResumeStore {
  get(): string | null;
  set(id: string | null): void;
}

export function sessionResumeStore(workspace: string): ResumeStore {
  const key = `k8shell.terminal.${workspace}`;
  return {
    get: () => sessionStorage.getItem(key),
    set: (id) => (id ? sessionStorage.setItem(key, id) : sessionStorage.removeItem(key)),
  };
}

function memoryStore(): ResumeStore {
  let id: string | null = null;
  return { get: () => id, set: (value) => (id = value) };
}

export interface TerminalSink {
  write(data: Uint8Array | string): void;
  /** Clears the screen: a shell taken over sends its recent output again. */
  reset(): void;
  size(): { cols: number; rows: number };
  phase(phase: Phase): void;
}

type Socket = Pick<WebSocket, "send" | "close" | "binaryType"> & {
  readonly readyState: number;
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
};

export function terminalUrl(id: string, cols: number, rows: number, base: Location | URL = location, resume?: string | null): string {
  const scheme = base.protocol === "https:" ? "wss:" : "ws:";
  const again = resume ? `&resume=${encodeURIComponent(resume)}` : "";
  return `${scheme}//${base.host}/api/v1/workspaces/${encodeURIComponent(id)}/terminal?cols=${cols}&rows=${rows}${again}`;
}

/** Said in the terminal when the shell asked for after a blip had ended or waited too long. */
export const GONE = "Your earlier shell is gone (it ended, or waited too long for you); this is a new one.";

/** What the person is told when the shell ends. */
export function exitMessage(control: { code?: number; signal?: string }): string {
  if (control.signal) return `The shell was killed by ${control.signal}.`;
  if (typeof control.code === "number") return `The shell exited with status ${control.code}.`;
  return "The shell ended.";
}

const MAX_DELAY_SECONDS = 30;

export class TerminalConnection {
  private socket: Socket | null = null;
  private attempt = 0;
  private ended = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly id: string,
    private readonly sink: TerminalSink,
    private readonly open: (url: string) => Socket = (url) => new WebSocket(url) as Socket,
    private readonly base: Location | URL = location,
    /** The shell to take back after a blip (k8shelld keeps it for a while). */
    private readonly resume: ResumeStore = memoryStore(),
  ) {}

  connect(): void {
    if (this.ended) return;
    this.attempt++;
    this.sink.phase({ phase: "connecting", attempt: this.attempt });
    const { cols, rows } = this.sink.size();
    const asked = this.resume.get();
    const socket = this.open(terminalUrl(this.id, cols, rows, this.base, asked));
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let readied = false;
    socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data === "string") {
        let control: Control;
        try {
          control = JSON.parse(event.data) as Control;
        } catch {
          return;
        }
        switch (control.type) {
          case "status":
            this.sink.phase({ phase: "starting", message: control.message });
            break;
          case "ready":
            readied = true;
            this.attempt = 0;
            this.sink.phase({ phase: "ready", session: control.session });
            break;
          case "attached":
            if (control.resumed) this.sink.reset();
            else if (asked) this.sink.write(`\r\n\x1b[33m${GONE}\x1b[0m\r\n`);
            this.resume.set(control.resume);
            break;
          case "exit":
            this.resume.set(null);
            this.end(exitMessage(control));
            break;
          case "error":
            // Refusals and a Terminate are final; a restarting server is worth another try.
            if (/reconnect/i.test(control.message)) this.sink.write(`\r\n\x1b[33m${control.message}\x1b[0m\r\n`);
            else this.end(control.message);
            break;
        }
      } else {
        this.sink.write(new Uint8Array(event.data as ArrayBuffer));
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.ended) return;
      if (!readied && this.attempt >= 5) {
        this.end("The terminal could not be opened. Check that the workspace exists and try again.");
        return;
      }
      const inSeconds = Math.min(MAX_DELAY_SECONDS, 2 ** Math.min(this.attempt, 5) / 2);
      this.sink.phase({ phase: "reconnecting", inSeconds, attempt: this.attempt });
      this.timer = setTimeout(() => this.connect(), inSeconds * 1000);
    };
  }

  /** Keystrokes and pastes from the terminal. */
  input(data: string): void {
    if (this.socket && this.socket.readyState === 1) this.socket.send(this.encoder.encode(data));
  }

  resize(cols: number, rows: number): void {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Tries again now (the person pressed "Reconnect"). */
  retry(): void {
    // After an end, "New shell" means a new one.
    if (this.ended) this.resume.set(null);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ended = false;
    if (!this.socket) this.connect();
  }

  close(): void {
    this.ended = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
  }

  private end(message: string): void {
    this.ended = true;
    this.sink.phase({ phase: "ended", message });
    this.socket?.close();
  }
}

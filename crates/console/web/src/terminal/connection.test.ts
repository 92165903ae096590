import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { GONE, type Phase, TerminalConnection, exitMessage, terminalUrl } from "./connection";

class FakeSocket {
  static made: FakeSocket[] = [];
  readyState = 1;
  binaryType: BinaryType = "blob";
  sent: unknown[] = [];
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  send(data: unknown) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
    this.onclose?.({} as CloseEvent);
  }
  control(message: object) {
    this.onmessage?.({ data: JSON.stringify(message) } as MessageEvent);
  }
  output(text: string) {
    this.onmessage?.({ data: new TextEncoder().encode(text).buffer } as MessageEvent);
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({} as CloseEvent);
  }
}

function connection() {
  const phases: Phase[] = [];
  const written: string[] = [];
  const resets: number[] = [];
  const conn = new TerminalConnection(
    "ws-1",
    {
      write: (data) => written.push(typeof data === "string" ? data : new TextDecoder().decode(data)),
      size: () => ({ cols: 100, rows: 30 }),
      phase: (p) => phases.push(p),
      reset: () => resets.push(written.length),
    },
    (url) => new FakeSocket(url),
    new URL("https://console.example:8443/workspaces/ws-1/terminal"),
  );
  return { conn, phases, written, resets };
}

beforeEach(() => {
  FakeSocket.made = [];
  vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe("TerminalConnection", () => {
  it("opens the socket at the terminal's size and shows what the server says", () => {
    const { conn, phases, written } = connection();
    conn.connect();
    const socket = FakeSocket.made[0];
    expect(socket.url).toBe("wss://console.example:8443/api/v1/workspaces/ws-1/terminal?cols=100&rows=30");
    expect(socket.binaryType).toBe("arraybuffer");
    socket.control({ type: "status", message: "starting workspace alice/web" });
    socket.control({ type: "ready", session: "s-1" });
    socket.output("$ ");
    expect(phases.map((p) => p.phase)).toEqual(["connecting", "starting", "ready"]);
    expect(written).toEqual(["$ "]);
  });

  it("sends keystrokes as bytes and a resize as a control", () => {
    const { conn } = connection();
    conn.connect();
    conn.input("echo hi\r");
    conn.resize(120, 40);
    const [keys, resize] = FakeSocket.made[0].sent;
    expect(new TextDecoder().decode(keys as Uint8Array)).toBe("echo hi\r");
    expect(JSON.parse(resize as string)).toEqual({ type: "resize", cols: 120, rows: 40 });
  });

  it("reconnects after a dropped connection, and not after the shell exits", () => {
    const { conn, phases } = connection();
    conn.connect();
    FakeSocket.made[0].control({ type: "ready", session: "s-1" });
    FakeSocket.made[0].drop();
    expect(phases.at(-1)).toMatchObject({ phase: "reconnecting" });
    vi.runOnlyPendingTimers();
    expect(FakeSocket.made).toHaveLength(2);
    FakeSocket.made[1].control({ type: "exit", code: 3 });
    expect(phases.at(-1)).toEqual({ phase: "ended", message: "The shell exited with status 3." });
    vi.runAllTimers();
    expect(FakeSocket.made).toHaveLength(2);
  });

  it("comes back to the same shell after a blip, and clears the screen for its replay", () => {
    const { conn, resets, written } = connection();
    conn.connect();
    FakeSocket.made[0].control({ type: "ready", session: "s-1" });
    FakeSocket.made[0].control({ type: "attached", resume: "abc123", resumed: false });
    expect(resets).toEqual([]);
    FakeSocket.made[0].drop();
    vi.runOnlyPendingTimers();
    expect(FakeSocket.made[1].url).toContain("&resume=abc123");
    FakeSocket.made[1].control({ type: "attached", resume: "abc123", resumed: true });
    expect(resets).toHaveLength(1);
    expect(written.join("")).not.toContain(GONE);
    // Once the shell has exited, a new shell is a new one.
    FakeSocket.made[1].control({ type: "exit", code: 0 });
    conn.retry();
    expect(FakeSocket.made[2].url).not.toContain("resume=");
  });

  it("says so in the terminal when the shell asked for is gone", () => {
    const { conn, resets, written, phases } = connection();
    conn.connect();
    FakeSocket.made[0].control({ type: "attached", resume: "old", resumed: false });
    expect(written.join("")).not.toContain(GONE); // nothing was asked for yet
    FakeSocket.made[0].drop();
    vi.runOnlyPendingTimers();
    FakeSocket.made[1].control({ type: "ready", session: "s-2" });
    FakeSocket.made[1].control({ type: "attached", resume: "new", resumed: false });
    expect(written.join("")).toContain(GONE);
    expect(resets).toEqual([]);
    expect(phases.at(-1)).toEqual({ phase: "ready", session: "s-2" });
    FakeSocket.made[1].drop();
    vi.runOnlyPendingTimers();
    expect(FakeSocket.made[2].url).toContain("&resume=new");
  });

  it("ends on a refusal with the server's words", () => {
    const { conn, phases } = connection();
    conn.connect();
    FakeSocket.made[0].control({ type: "error", message: "alice/web does not exist or is not yours" });
    expect(phases.at(-1)).toEqual({ phase: "ended", message: "alice/web does not exist or is not yours" });
  });
});

describe("terminalUrl and exitMessage", () => {
  it("uses ws: for plain http", () => {
    expect(terminalUrl("a b", 80, 24, new URL("http://10.0.0.1:8080/"))).toBe("ws://10.0.0.1:8080/api/v1/workspaces/a%20b/terminal?cols=80&rows=24");
  });
  it("names a signal", () => {
    expect(exitMessage({ signal: "KILL" })).toBe("The shell was killed by KILL.");
  });
});

// A live session's terminal, read-only, for administrators: the API's `/sessions/{id}/live`
// stream (the recent output first, then as it happens) written into an xterm.
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { BASE } from "../api";
import { terminalTheme } from "../terminal/theme";
import { CastParser, parseSize } from "./cast";

export function LiveView({ sessionId, onEnd }: { sessionId: string; onEnd: () => void }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState("Connecting…");
  const [channels, setChannels] = useState<number[]>([]);
  const [shown, setShown] = useState<number | null>(null);
  const shownRef = useRef<number | null>(null);

  useEffect(() => {
    if (!host.current) return;
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    const term = new Terminal({ disableStdin: true, fontSize: 13, theme: terminalTheme(dark) });
    term.open(host.current);
    // One parser per terminal of the session; only the shown one is written.
    const parsers = new Map<number, CastParser>();
    const source = new EventSource(`${BASE}/sessions/${encodeURIComponent(sessionId)}/live`);
    source.addEventListener("open", () => setStatus("Watching live. You cannot type here."));
    source.addEventListener("error", () => setStatus("The live view was interrupted; retrying…"));
    source.addEventListener("output", (message) => {
      const { channel, lines } = JSON.parse((message as MessageEvent<string>).data) as { channel: number; lines: string };
      let parser = parsers.get(channel);
      if (!parser) {
        parser = new CastParser();
        parsers.set(channel, parser);
        setChannels((list) => (list.includes(channel) ? list : [...list, channel]));
        if (shownRef.current === null) {
          shownRef.current = channel;
          setShown(channel);
        }
      }
      const hadHeader = parser.header !== null;
      const events = parser.push(lines);
      if (channel !== shownRef.current) return;
      if (!hadHeader && parser.header) term.resize(parser.header.width, parser.header.height);
      for (const event of events) {
        if (event.code === "o") term.write(event.data);
        else if (event.code === "r") {
          const size = parseSize(event.data);
          if (size) term.resize(size.cols, size.rows);
        }
      }
    });
    source.addEventListener("end", () => {
      setStatus("The session ended.");
      source.close();
      onEnd();
    });
    return () => {
      source.close();
      term.dispose();
    };
  }, [sessionId]);

  return (
    <div class="player" data-testid="live-view">
      <p role="status" data-testid="live-status">
        {status}
        {channels.length > 1 ? ` Showing terminal on channel ${shown}.` : ""}
      </p>
      <div class="player-screen" ref={host} role="region" aria-label="Live terminal" />
    </div>
  );
}

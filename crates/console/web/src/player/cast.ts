// asciicast v2 read as it arrives: a header line, then one `[time, code, data]` line per event.

export interface CastHeader {
  version: number;
  width: number;
  height: number;
  timestamp?: number;
  title?: string;
}

export interface CastEvent {
  time: number;
  code: string;
  data: string;
}

/** Splits text chunks into lines; keeps a partial last line for the next chunk. */
export class CastParser {
  private pending = "";
  header: CastHeader | null = null;

  /** The events completed by `chunk`. A malformed line is an error: it names the line. */
  push(chunk: string): CastEvent[] {
    this.pending += chunk;
    const lines = this.pending.split("\n");
    this.pending = lines.pop() ?? "";
    const events: CastEvent[] = [];
    for (const line of lines) {
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /** Whatever was left without a final newline. */
  finish(): CastEvent[] {
    const rest = this.pending;
    this.pending = "";
    const event = rest ? this.line(rest) : null;
    return event ? [event] : [];
  }

  private line(line: string): CastEvent | null {
    if (!line.trim()) return null;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`the recording has a line that is not JSON: ${line.slice(0, 80)}`);
    }
    if (!this.header) {
      const header = value as CastHeader;
      if (typeof header !== "object" || header === null || header.version !== 2) {
        throw new Error("the recording is not an asciicast v2 file");
      }
      this.header = header;
      return null;
    }
    if (!Array.isArray(value) || typeof value[0] !== "number" || typeof value[1] !== "string") {
      throw new Error(`the recording has an event that is not [time, code, data]: ${line.slice(0, 80)}`);
    }
    return { time: value[0], code: value[1], data: String(value[2] ?? "") };
  }
}

/** `"120x40"` → `{cols: 120, rows: 40}`. */
export function parseSize(data: string): { cols: number; rows: number } | null {
  const found = /^(\d+)x(\d+)$/.exec(data.trim());
  if (!found) return null;
  return { cols: Number(found[1]), rows: Number(found[2]) };
}

/** Reads a response body as cast events, chunk by chunk. */
export async function* readCast(body: ReadableStream<Uint8Array>, parser = new CastParser()): AsyncGenerator<CastEvent, CastHeader | null> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    yield* parser.finish();
  } finally {
    reader.releaseLock();
  }
  return parser.header;
}

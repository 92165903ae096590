import { describe, expect, it } from "vitest";
import { CastParser, parseSize, readCast } from "./cast";
import { PlaybackClock } from "./clock";

const CAST = '{"version":2,"width":80,"height":24}\n[0.5,"o","echo console-ok\\r\\n"]\n[1.25,"r","100x30"]\n[2,"o","console-ok\\r\\n"]\n';

describe("CastParser", () => {
  it("reads events across chunk boundaries", () => {
    const parser = new CastParser();
    const events = [];
    for (let i = 0; i < CAST.length; i += 5) events.push(...parser.push(CAST.slice(i, i + 5)));
    events.push(...parser.finish());
    expect(parser.header).toMatchObject({ width: 80, height: 24 });
    expect(events.map((e) => [e.time, e.code])).toEqual([
      [0.5, "o"],
      [1.25, "r"],
      [2, "o"],
    ]);
    expect(events[2].data).toBe("console-ok\r\n");
  });

  it("says which line is broken", () => {
    const parser = new CastParser();
    expect(() => parser.push('{"version":2}\n[0.1,"o"\n')).toThrow(/not JSON: \[0.1,"o"/);
    expect(() => new CastParser().push('{"version":1}\n')).toThrow(/not an asciicast v2/);
  });

  it("reads a stream", async () => {
    const bytes = new TextEncoder().encode(CAST);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 40));
        controller.enqueue(bytes.slice(40));
        controller.close();
      },
    });
    const seen = [];
    for await (const event of readCast(body)) seen.push(event.code);
    expect(seen).toEqual(["o", "r", "o"]);
  });
});

describe("parseSize", () => {
  it("reads COLSxROWS", () => {
    expect(parseSize("120x40")).toEqual({ cols: 120, rows: 40 });
    expect(parseSize("wide")).toBeNull();
  });
});

describe("PlaybackClock", () => {
  it("moves with wall time only while playing, at its speed", () => {
    let now = 0;
    const clock = new PlaybackClock(() => now);
    now = 1000;
    expect(clock.position()).toBe(0);
    clock.play();
    now = 2000;
    expect(clock.position()).toBe(1);
    clock.setSpeed(4);
    now = 2500;
    expect(clock.position()).toBe(3);
    clock.pause();
    now = 9000;
    expect(clock.position()).toBe(3);
    clock.seek(10);
    expect(clock.position()).toBe(10);
    clock.play();
    expect(clock.delayUntil(12)).toBe(500);
  });
});

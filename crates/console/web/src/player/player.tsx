// Replays a recording in a read-only terminal: play/pause, speed, and a seek bar. A seek asks
// the API for the recording from that time on, opened by the screen as it was then, so a long
// recording is never downloaded whole.
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { BASE, errorOf, query } from "../api";
import { ErrorMessage, formatDuration } from "../components/common";
import { terminalTheme } from "../terminal/theme";
import type { Recording } from "../types";
import { parseSize, readCast } from "./cast";
import { PlaybackClock } from "./clock";

const SPEEDS = [0.5, 1, 2, 4, 8];

export function recordingUrl(id: string, from: number): string {
  return `${BASE}/recordings/${encodeURIComponent(id)}${query(from > 0 ? { from: from.toFixed(3), screen: true } : {})}`;
}

/** A time in the recording: tenths of a second for a short one, minutes and seconds otherwise. */
export function timeText(seconds: number, duration: number): string {
  return duration < 60 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function Player({ recording }: { recording: Recording }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal | null>(null);
  const clock = useRef(new PlaybackClock());
  const run = useRef<AbortController | null>(null);
  const [position, setPosition] = useState(0);
  const [playing, setPlaying] = useState(false);
  const [speed, setSpeed] = useState(1);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);
  const duration = recording.duration;

  /** Streams the recording from `from` and writes each event when the clock reaches it. */
  const load = async (from: number) => {
    run.current?.abort();
    const controller = new AbortController();
    run.current = controller;
    const t = term.current;
    if (!t) return;
    t.reset();
    setError(null);
    setLoading(true);
    try {
      const response = await fetch(recordingUrl(recording.id, from), { signal: controller.signal, credentials: "same-origin" });
      if (!response.ok || !response.body) throw await errorOf(response, "/recordings");
      const events = readCast(response.body);
      let first = true;
      for (;;) {
        const next = await events.next();
        if (first) {
          first = false;
          setLoading(false);
        }
        if (next.done || controller.signal.aborted) break;
        const event = next.value;
        while (!controller.signal.aborted && event.time > clock.current.position()) {
          await sleep(clock.current.playing ? Math.min(100, clock.current.delayUntil(event.time)) : 100);
        }
        if (controller.signal.aborted) break;
        if (event.code === "o") t.write(event.data);
        else if (event.code === "r") {
          const size = parseSize(event.data);
          if (size) t.resize(size.cols, size.rows);
        }
      }
      if (!controller.signal.aborted) {
        // The recording is over: the bar stops at its end.
        clock.current.seek(Math.max(clock.current.position(), duration));
        clock.current.pause();
        setPlaying(false);
      }
    } catch (e) {
      if (!controller.signal.aborted) setError(e);
    } finally {
      if (run.current === controller) setLoading(false);
    }
  };

  useEffect(() => {
    if (!host.current) return;
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    const t = new Terminal({ disableStdin: true, cursorBlink: false, convertEol: false, fontSize: 13, theme: terminalTheme(dark) });
    t.open(host.current);
    term.current = t;
    void load(0);
    const timer = setInterval(() => setPosition(Math.min(duration, clock.current.position())), 200);
    return () => {
      clearInterval(timer);
      run.current?.abort();
      t.dispose();
    };
  }, [recording.id]);

  const toggle = () => {
    const c = clock.current;
    if (c.playing) c.pause();
    else {
      if (c.position() >= duration) {
        c.seek(0);
        void load(0);
      }
      c.play();
    }
    setPlaying(c.playing);
  };
  const seek = (seconds: number) => {
    clock.current.seek(seconds);
    setPosition(seconds);
    void load(seconds);
  };

  return (
    <div class="player" data-testid="player">
      <div class="player-screen" ref={host} role="region" aria-label="Recording" />
      <div class="player-controls">
        <button type="button" onClick={toggle} aria-label={playing ? "Pause" : "Play"} data-testid="play">
          {playing ? "Pause" : "Play"}
        </button>
        <input
          type="range"
          min={0}
          max={Math.max(duration, 0.1)}
          step={0.1}
          value={position}
          aria-label="Position in the recording"
          aria-valuetext={`${timeText(position, duration)} of ${timeText(duration, duration)}`}
          data-testid="seek"
          onChange={(e) => seek(Number(e.currentTarget.value))}
        />
        <span class="player-time" data-testid="player-time">
          {timeText(position, duration)} / {timeText(duration, duration)}
        </span>
        <label for={`speed-${recording.id}`} class="visually-hidden">
          Speed
        </label>
        <select
          id={`speed-${recording.id}`}
          value={String(speed)}
          onChange={(e) => {
            const value = Number(e.currentTarget.value);
            clock.current.setSpeed(value);
            setSpeed(value);
          }}
        >
          {SPEEDS.map((s) => (
            <option key={s} value={String(s)}>
              {s}×
            </option>
          ))}
        </select>
        <a class="button secondary" href={`${BASE}/recordings/${encodeURIComponent(recording.id)}`} download={`${recording.id}.cast`}>
          Download .cast
        </a>
        {loading ? <span aria-busy="true">Loading…</span> : null}
      </div>
      {recording.complete ? null : (
        <p class="hint" data-testid="recording-saving">
          Part of this recording is still being saved; its end will appear shortly.
        </p>
      )}
      <ErrorMessage error={error} />
    </div>
  );
}

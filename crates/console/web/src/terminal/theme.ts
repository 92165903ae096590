import type { ITheme } from "@xterm/xterm";

/** The terminal's colours, following the system's light or dark preference. */
export function terminalTheme(dark: boolean): ITheme {
  return dark
    ? { background: "#111418", foreground: "#e6e8eb", cursor: "#e6e8eb", selectionBackground: "#3b4f6b" }
    : { background: "#ffffff", foreground: "#1b1f24", cursor: "#1b1f24", selectionBackground: "#b6d0f2" };
}

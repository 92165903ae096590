// Headless Chromium from Debian, driven by playwright-core, as the console's users' browser.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";

export const CHROMIUM = process.env.K8SHELL_CHROMIUM ?? "/usr/bin/chromium";
export const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** A setting the test needs from the harness; missing one is a loud failure. */
export function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through crates/e2e/tests/console.rs (scripts/test does)`);
  return value;
}

export async function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/** Saves a screenshot of the page as a test artifact, named for the step. */
export async function snap(page: Page, name: string): Promise<string> {
  const dir = setting("K8SHELL_ARTIFACTS");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** The text on an xterm.js screen (its DOM renderer keeps one element per row). */
export async function screenText(page: Page, selector: string): Promise<string> {
  return page.locator(`${selector} .xterm-rows`).evaluate((rows) =>
    Array.from(rows.children)
      .map((row) => row.textContent ?? "")
      .join("\n"),
  );
}

/** Waits until `predicate` holds for the screen's text; the error shows the screen. */
export async function waitForScreen(page: Page, selector: string, predicate: (text: string) => boolean, what: string): Promise<string> {
  let text = "";
  for (let i = 0; i < 600; i++) {
    text = await screenText(page, selector);
    if (predicate(text)) return text;
    await page.waitForTimeout(100);
  }
  throw new Error(`the screen never showed ${what}; it shows:\n${text}`);
}

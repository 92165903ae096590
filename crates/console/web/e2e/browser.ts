// Headless Chromium from Debian, driven by playwright-core, as the console's users' browser.
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type { AxeResults, ElementContext, Result, RunOptions } from "axe-core";
import { type Browser, type Page, chromium } from "playwright-core";
import { expect } from "vitest";

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

/** axe-core's rules for WCAG 2.0, 2.1 and 2.2 at levels A and AA, and its best practices. */
const AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"];
const AXE_SCRIPT = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
let axeSource = "";

/**
 * Checks the page as it is now with axe-core (WCAG 2.2 AA and best practices) and fails with every
 * violation: its rule, impact, the elements and how to fix it. The terminal's screen is left out:
 * its colours are what the program in it chose.
 */
export async function expectAccessible(page: Page, name: string): Promise<void> {
  if ((await page.evaluate(() => typeof (window as { axe?: unknown }).axe)) === "undefined") {
    // Evaluated by the driver rather than added as a <script>: the console's policy refuses
    // scripts that are not its own, as it should.
    axeSource ||= readFileSync(AXE_SCRIPT, "utf8");
    await page.evaluate(axeSource);
  }
  const results = await page.evaluate(
    (tags) => (window as unknown as { axe: { run(c: ElementContext, o: RunOptions): Promise<AxeResults> } }).axe.run(
      { exclude: [".xterm-rows", ".xterm-screen"] },
      { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] },
    ),
    AXE_TAGS,
  );
  const found = results.violations.map(
    (v: Result) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => n.target.join(" ")).join("\n    ")}\n    ${v.helpUrl}`,
  );
  expect(found, `accessibility of ${name} (${page.url()})`).toEqual([]);
}

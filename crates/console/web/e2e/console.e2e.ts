// One person's visit to the console, in headless Chromium against the real platform: sign in
// through the OpenID provider, create a workspace, use its terminal, resize it, stop and start
// the workspace, find the session and replay it, seek, visit every other page, and delete the
// workspace. Each page is saved as a screenshot (K8SHELL_ARTIFACTS) and checked with axe-core
// (WCAG 2.2 AA and best practices).
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { expectAccessible, launch, screenText, setting, snap, waitForScreen } from "./browser";

const URL = setting("K8SHELL_CONSOLE_URL");
const LOGIN = setting("K8SHELL_OIDC_LOGIN");
const WORKSPACE = "console";

let browser: Browser;
let context: BrowserContext;
let page: Page;
let workspacePath = "";
let sessionPath = "";

beforeAll(async () => {
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light" });
  page = await context.newPage();
  page.setDefaultTimeout(120_000);
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
});

// Each step builds on the one before: after a failure the rest only say so, quickly.
let failedStep = "";
afterEach(async (context) => {
  if (context.task.result?.state === "fail" && !failedStep) {
    failedStep = context.task.name;
    // What every open page showed when the step failed, to see why.
    const pages = browser?.contexts().flatMap((c) => c.pages()) ?? [];
    for (const [i, open] of pages.entries()) {
      const path = await snap(open, `failed-${i + 1}`).catch(() => "");
      console.error(`after the failure, page ${i + 1} was at ${open.url()} (screenshot: ${path})`);
    }
  }
});
beforeEach(() => {
  if (failedStep) throw new Error(`not run: the step "${failedStep}" failed`);
});

afterAll(async () => {
  await browser?.close();
});

describe("the console", () => {
  it("signs in through the OpenID provider", async () => {
    await page.goto(URL);
    await snap(page, "01-sign-in");
    await expectAccessible(page, "01-sign-in");
    await page.getByRole("link", { name: "Sign in" }).click();
    // The provider's own pages: a login form, then consent.
    await page.locator('input[name="login"]').fill(LOGIN);
    await page.locator('input[name="password"]').fill("any");
    await page.locator('button[type="submit"]').click();
    const consent = page.locator('button[type="submit"]');
    if (await page.locator('input[name="login"]').count() === 0 && (await consent.count()) > 0 && !page.url().startsWith(URL)) {
      await consent.click();
    }
    await page.waitForURL(`${URL}/workspaces`);
    await expect.poll(() => page.getByTestId("whoami").textContent()).toBe(LOGIN);
    await snap(page, "02-workspaces");
    await expectAccessible(page, "02-workspaces");
  });

  it("creates a workspace from an example", async () => {
    await page.getByRole("link", { name: "New workspace" }).click();
    await page.getByLabel("Name").fill(WORKSPACE);
    await page.getByLabel("Example", { exact: true }).selectOption("busybox");
    await snap(page, "03-new-workspace");
    await expectAccessible(page, "03-new-workspace");
    await page.getByRole("button", { name: "Create workspace" }).click();
    await page.waitForURL(/\/workspaces\/[0-9a-f-]{36}$/);
    workspacePath = new globalThis.URL(page.url()).pathname;
    await expect.poll(() => page.locator("h1").textContent()).toBe(`${LOGIN}/${WORKSPACE}`);
    await expect.poll(() => page.getByTestId("ssh-command").textContent()).toContain(`${LOGIN}+${WORKSPACE}@`);
    await snap(page, "04-workspace");
    await expectAccessible(page, "04-workspace");
  });

  it("opens a terminal, runs a command and follows a resize", async () => {
    await page.getByRole("link", { name: `Terminal of ${WORKSPACE}` }).click();
    await expect.poll(() => page.getByTestId("terminal-status").textContent()).toContain("Connected.");
    await page.locator(".terminal .xterm").click();
    await page.keyboard.type("echo console-ok\n");
    await waitForScreen(page, ".terminal", (t) => t.split("console-ok").length >= 3, "console-ok echoed and printed");
    await snap(page, "05-terminal");
    await expectAccessible(page, "05-terminal");

    // The connection drops (here: the page reloads): the same shell comes back, with its state.
    await page.keyboard.type("kept=same-shell-$((6*7)); echo stored\n");
    // The line ran before the drop (keys still on their way when a page goes are lost, as with
    // any terminal). Its output says nothing of the value, which only `echo $kept` shows later.
    await waitForScreen(page, ".terminal", (t) => t.split("stored").length >= 3, "the variable stored");
    await page.reload();
    await expect.poll(() => page.getByTestId("terminal-status").textContent()).toContain("Connected.");
    await page.locator(".terminal .xterm").click();
    await page.keyboard.type("echo $kept\n");
    await waitForScreen(page, ".terminal", (t) => t.includes("same-shell-42"), "the variable set before the drop");

    // A smaller window: the terminal fits itself, and the shell hears the new size.
    await page.setViewportSize({ width: 900, height: 600 });
    await expect.poll(async () => (await page.locator(".terminal-status .size").textContent()) ?? "").not.toBe("");
    const size = async () => ((await page.locator(".terminal-status .size").textContent()) ?? "").split("×").map(Number);
    let [cols, rows] = await size();
    await expect.poll(async () => {
      [cols, rows] = await size();
      await page.keyboard.type("stty size\n");
      await page.waitForTimeout(300);
      return (await screenText(page, ".terminal")).includes(`${rows} ${cols}`);
    }).toBe(true);
    expect(cols).toBeLessThan(120);
    await snap(page, "06-terminal-resized");
    await expectAccessible(page, "06-terminal-resized");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it("stops and starts the workspace", async () => {
    await page.goto(`${URL}${workspacePath}`);
    await page.getByRole("button", { name: `Stop ${WORKSPACE}` }).click();
    await expect.poll(() => page.locator(".page-head .badge").textContent(), { timeout: 120_000 }).toBe("stopped");
    await snap(page, "07-workspace-stopped");
    await expectAccessible(page, "07-workspace-stopped");
    await page.getByRole("button", { name: `Start ${WORKSPACE}` }).click();
    await expect.poll(() => page.locator(".page-head .badge").textContent(), { timeout: 120_000 }).toBe("running");
  });

  it("lists the session and replays what was typed, with seeking", async () => {
    await page.getByRole("link", { name: "Sessions in this workspace" }).click();
    await page.waitForURL(/\/sessions\?workspace_id=/);
    const row = page.locator("tr[data-session]").first();
    await expect.poll(() => row.count()).toBe(1);
    await snap(page, "08-sessions");
    await expectAccessible(page, "08-sessions");
    await row.getByRole("link").click();
    await page.waitForURL(/\/sessions\/[0-9a-f-]{36}$/);
    sessionPath = new globalThis.URL(page.url()).pathname;
    const player = page.getByTestId("player");
    await expect.poll(() => player.count()).toBe(1);
    // The page says when the recording is whole (its upload is through).
    await expect.poll(() => page.getByTestId("recording-saving").count()).toBe(0);
    await expect.poll(async () => (await page.getByTestId("player-time").textContent()) ?? "").not.toMatch(/\/ 0\.0 s$/);

    // Play at 8×: what was typed comes back.
    await page.getByLabel("Speed").selectOption("8");
    await page.getByTestId("play").click();
    await waitForScreen(page, ".player-screen", (t) => t.includes("console-ok"), "console-ok in the replay");
    // Paused, for the seeks below. The replay may have reached its end and stopped by itself (a
    // click on Play would then start it again), so the button is pressed until it says Play.
    const play = page.getByTestId("play");
    await expect
      .poll(async () => {
        if ((await play.textContent()) === "Pause") await play.click();
        return play.textContent();
      })
      .toBe("Play");
    await snap(page, "09-replay");
    await expectAccessible(page, "09-replay");

    // Seek to the start, then to the end: the screen as it was then, from a request that starts
    // there instead of the whole recording.
    const asked: string[] = [];
    page.on("request", (request) => {
      if (request.url().includes("/api/v1/recordings/")) asked.push(request.url());
    });
    const seekTo = (fraction: number) =>
      page.getByTestId("seek").evaluate((input, f) => {
        const range = input as HTMLInputElement;
        range.value = String(Number(range.max) * (f as number));
        range.dispatchEvent(new Event("change", { bubbles: true }));
      }, fraction);
    // (The newest session is the one the reload came back in: it opens with the shell's recent
    // output, and `echo $kept` comes later.)
    await seekTo(0);
    await waitForScreen(page, ".player-screen", (t) => !t.includes("same-shell-42"), "the screen before `echo $kept`");
    await seekTo(0.99);
    await waitForScreen(page, ".player-screen", (t) => t.includes("same-shell-42"), "same-shell-42 at the end");
    expect(asked.some((u) => /[?&]from=\d/.test(u) && u.includes("screen=true"))).toBe(true);
    await snap(page, "10-replay-seeked");
    await expectAccessible(page, "10-replay-seeked");

    // The .cast download is the whole recording.
    const href = await page.getByRole("link", { name: "Download .cast" }).getAttribute("href");
    const cast = await page.request.get(`${URL}${href}`);
    expect(cast.status()).toBe(200);
    expect(await cast.text()).toContain("console-ok");
  });

  it("lets an administrator watch a live terminal, read-only", async () => {
    await page.goto(`${URL}${workspacePath}/terminal`);
    await expect.poll(() => page.getByTestId("terminal-status").textContent()).toContain("Connected.");
    // The workspace was stopped since this tab's last shell: the terminal says this one is new.
    await waitForScreen(page, ".terminal", (t) => t.includes("Your earlier shell is gone"), "the new-shell notice");
    const watcher = await context.newPage();
    watcher.setDefaultTimeout(120_000);
    await watcher.setViewportSize({ width: 1280, height: 800 });
    await watcher.goto(`${URL}/sessions?live=true`);
    await watcher.locator("tr[data-session] a").first().click();
    await expect.poll(() => watcher.getByTestId("live-status").textContent()).toContain("Watching live");
    await page.locator(".terminal .xterm").click();
    await page.keyboard.type("echo live-$((6*7))\n");
    await waitForScreen(watcher, '[data-testid="live-view"]', (t) => t.includes("live-42"), "live-42 in the live view");
    await snap(watcher, "11-live-view");
    await expectAccessible(watcher, "11-live-view");
    // Typing into the live view reaches nobody.
    await watcher.locator('[data-testid="live-view"] .xterm').click();
    await watcher.keyboard.type("echo from-the-watcher\n");
    // The user's own typing after it arrives; the watcher's, had it gone anywhere, would be before.
    await page.locator(".terminal .xterm").click();
    await page.keyboard.type("echo after-the-$((6*7))\n");
    await waitForScreen(page, ".terminal", (t) => t.includes("after-the-42"), "the user's later echo");
    expect(await screenText(page, ".terminal")).not.toContain("from-the-watcher");
    // Leaving the terminal ends the session; the watcher is told.
    await page.goto(`${URL}/workspaces`);
    await expect.poll(() => watcher.getByTestId("live-status").textContent()).toContain("The session ended.");
    await watcher.close();
  });

  it("shows keys, tokens, users and decisions", async () => {
    await page.getByRole("link", { name: "SSH keys" }).click();
    await expect.poll(() => page.locator("h1").textContent()).toBe("SSH keys");
    await snap(page, "12-keys");
    await expectAccessible(page, "12-keys");
    await page.getByRole("link", { name: "API tokens" }).click();
    await page.getByLabel("New token name").fill("console-e2e");
    await page.getByRole("button", { name: "Create token" }).click();
    await expect.poll(async () => ((await page.getByTestId("token-secret").textContent()) ?? "").length).toBeGreaterThan(20);
    await snap(page, "13-tokens");
    await expectAccessible(page, "13-tokens");
    await page.getByRole("link", { name: "Users" }).click();
    await expect.poll(() => page.locator(`tr[data-user="${LOGIN}"]`).count()).toBe(1);
    await snap(page, "14-users");
    await expectAccessible(page, "14-users");
    await page.getByRole("link", { name: "Decisions" }).click();
    await expect.poll(() => page.locator("tbody tr").count()).toBeGreaterThan(0);
    await snap(page, "15-decisions");
    await expectAccessible(page, "15-decisions");
  });

  it("works on a narrow window, in the dark, and from the keyboard", async () => {
    await page.goto(`${URL}/workspaces`);
    await page.setViewportSize({ width: 390, height: 800 });
    await page.emulateMedia({ colorScheme: "dark" });
    await expect.poll(() => page.locator(`tr[data-workspace="${WORKSPACE}"]`).count()).toBe(1);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(background).toBe("rgb(13, 17, 23)");
    await snap(page, "16-narrow-dark");
    await expectAccessible(page, "16-narrow-dark");
    // The page does not scroll sideways (tables scroll inside their own box); if it does, the
    // elements that stick out are named.
    const overflow = await page.evaluate(() => ({
      by: document.documentElement.scrollWidth - window.innerWidth,
      sticking: Array.from(document.querySelectorAll("body *"))
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5 && !e.closest(".table-wrap"))
        .map((e) => `${e.tagName.toLowerCase()}.${e.className}`),
    }));
    expect(overflow).toEqual({ by: 0, sticking: [] });
    // The first Tab reaches the skip link, which leads to the page's content.
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Skip to content");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it("keeps every page readable in the dark", async () => {
    // Each page with what shows it has loaded; the light theme was checked on the way here.
    const pages: [string, string][] = [
      ["/workspaces", `tr[data-workspace="${WORKSPACE}"]`],
      ["/workspaces/new", "form"],
      [workspacePath, '[data-testid="ssh-command"]'],
      ["/sessions", "tr[data-session]"],
      [sessionPath, '[data-testid="player-time"]'],
      ["/keys", "h1"],
      ["/tokens", "tbody tr"],
      ["/admin/users", `tr[data-user="${LOGIN}"]`],
      ["/admin/decisions", "tbody tr"],
    ];
    for (const [path, loaded] of pages) {
      await page.goto(`${URL}${path}`);
      await page.locator(loaded).first().waitFor();
      await expect.poll(() => page.locator('[aria-busy="true"]').count()).toBe(0);
      await expectAccessible(page, `${path} in the dark`);
    }
    await page.emulateMedia({ colorScheme: "light" });
  });

  it("deletes the workspace only after a confirmation", async () => {
    await page.goto(`${URL}/workspaces`);
    const row = page.locator(`tr[data-workspace="${WORKSPACE}"]`);
    await expect.poll(() => row.count()).toBe(1);
    const dialog = page.getByRole("dialog", { name: `Delete ${WORKSPACE}?` });
    await row.getByRole("button", { name: `Delete ${WORKSPACE}` }).click();
    await dialog.waitFor();
    await snap(page, "17-delete-confirmation");
    await expectAccessible(page, "17-delete-confirmation");
    // Cancel (here: the Escape key) keeps it: no request to delete goes out.
    const deletes: string[] = [];
    const onRequest = (request: { method(): string; url(): string }) => {
      if (request.method() === "DELETE") deletes.push(request.url());
    };
    page.on("request", onRequest);
    await page.keyboard.press("Escape");
    await expect.poll(() => dialog.count()).toBe(0);
    expect(deletes).toEqual([]);
    expect(await row.count()).toBe(1);
    await row.getByRole("button", { name: `Delete ${WORKSPACE}` }).click();
    await dialog.getByRole("button", { name: "Delete workspace" }).click();
    await expect.poll(() => deletes.length).toBe(1);
    page.off("request", onRequest);
    await expect.poll(() => row.count()).toBe(0);
    // Gone for the server too, not only from this page's live list.
    await page.reload();
    await expect.poll(() => page.getByRole("link", { name: "Create one" }).count()).toBe(1);
    expect(await row.count()).toBe(0);
  });

  it("signs out", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => page.getByRole("link", { name: "Sign in" }).count()).toBe(1);
    const me = await page.request.get(`${URL}/api/v1/me`);
    expect(me.status()).toBe(401);
  });
});

import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen } from "@testing-library/preact";
import { BlueprintEditor } from "./blueprint-editor";
import { ErrorMessage, StateBadge, formatBytes, formatDuration } from "./common";
import { ApiError } from "../api";
import { WorkspaceTable } from "../pages/workspaces";
import { applyEvent } from "../workspaces-live";
import { NAME } from "../pages/workspace-new";
import type { Workspace } from "../types";

afterEach(cleanup);

function workspace(name: string, state: string, extra: Partial<Workspace> = {}): Workspace {
  return {
    id: `id-${name}`,
    owner: "alice",
    name,
    blueprint: "busybox",
    image: "registry/k8shell/busybox:bp-1",
    runtime: "local",
    state,
    desired: "running",
    reason: "",
    idle_timeout_seconds: 3600,
    warnings: [],
    ssh_command: `ssh -p 2222 alice+${name}@localhost`,
    spec: {},
    ...extra,
  };
}

describe("BlueprintEditor", () => {
  it("marks the wrong line and moves the cursor there from the message", () => {
    const source = 'let x = 1 in\n{ name = "web",\n  resources = { cpu = "two" } }';
    render(<BlueprintEditor id="src" value={source} onInput={() => undefined} errors={[{ message: "cpu must be a number", line: 3, column: 23 }]} />);
    const area = screen.getByRole("textbox") as HTMLTextAreaElement;
    expect(area.getAttribute("aria-invalid")).toBe("true");
    expect(document.querySelector(".line-error")?.textContent).toBe("3");
    fireEvent.click(screen.getByRole("button", { name: "line 3, column 23" }));
    const third = source.split("\n").slice(0, 2).join("\n").length + 1;
    expect(area.selectionStart).toBe(third + 22);
    expect(screen.getByRole("alert").textContent).toContain("cpu must be a number");
  });
});

describe("WorkspaceTable", () => {
  it("lists workspaces with their state in words and the actions the state allows", () => {
    render(<WorkspaceTable workspaces={[workspace("web", "running"), workspace("db", "stopped")]} showOwner={false} />);
    expect(screen.getByText("running")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Stop web" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Start db" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Terminal of web" }).getAttribute("href")).toBe("/workspaces/id-web/terminal");
  });

  it("asks before deleting", () => {
    HTMLDialogElement.prototype.showModal = vi.fn(function (this: HTMLDialogElement) {
      this.setAttribute("open", "");
    });
    render(<WorkspaceTable workspaces={[workspace("web", "running"), workspace("db", "stopped")]} showOwner={false} />);
    fireEvent.click(screen.getByRole("button", { name: "Delete db" }));
    // The open dialog is named for its own workspace (each row has its own dialog).
    const dialog = screen.getByRole("dialog", { name: "Delete db?" });
    expect(dialog.textContent).toMatch(/db and its home directory are deleted for good/);
    expect(screen.getByRole("button", { name: "Delete workspace" })).toBeTruthy();
  });

  it("invites to create the first one", () => {
    render(<WorkspaceTable workspaces={[]} showOwner={false} />);
    expect(screen.getByRole("link", { name: "Create one" }).getAttribute("href")).toBe("/workspaces/new");
  });
});

describe("live workspace list", () => {
  it("replaces a changed workspace and drops a deleted one", () => {
    let list = applyEvent([], { workspace: workspace("web", "starting") });
    list = applyEvent(list, { workspace: workspace("api", "running") });
    list = applyEvent(list, { workspace: workspace("web", "running"), previous: "starting" });
    expect(list.map((w) => `${w.name}:${w.state}`)).toEqual(["api:running", "web:running"]);
    list = applyEvent(list, { workspace: workspace("api", "deleted") });
    expect(list.map((w) => w.name)).toEqual(["web"]);
  });
});

describe("small pieces", () => {
  it("shows the API's detail as an alert", () => {
    render(<ErrorMessage error={new ApiError(403, "Forbidden", "only admins may list users")} />);
    expect(screen.getByRole("alert").textContent).toBe("only admins may list users");
  });
  it("formats", () => {
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatDuration(3725)).toBe("1:02:05");
    expect(formatDuration(65)).toBe("1:05");
    render(<StateBadge state="RUNNING" />);
    expect(screen.getByText("running").className).toContain("state-running");
  });
  it("checks names as the provisioner does", () => {
    expect(NAME.test("web-1")).toBe(true);
    expect(NAME.test("Web")).toBe(false);
    expect(NAME.test("web-")).toBe(false);
    expect(NAME.test("1web")).toBe(false);
  });
});

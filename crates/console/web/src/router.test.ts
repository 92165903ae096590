import { describe, expect, it } from "vitest";
import { match } from "./router";

describe("match", () => {
  it("takes parameters from the path", () => {
    expect(match("/workspaces/:id/terminal", "/workspaces/0f1e/terminal")).toEqual({ id: "0f1e" });
    expect(match("/sessions/:id", "/sessions/a%20b")).toEqual({ id: "a b" });
  });

  it("does not match other paths", () => {
    expect(match("/workspaces/:id", "/workspaces")).toBeNull();
    expect(match("/workspaces/:id", "/sessions/1")).toBeNull();
    expect(match("/workspaces/:id", "/workspaces/%E0%A4%A")).toBeNull();
  });
});

import { describe, expect, it, vi } from "vitest";
import { ApiError, onSignedOut, query, request, setCsrfToken } from "./api";

function respond(status: number, body: unknown, type = "application/problem+json") {
  return vi.fn(async () => new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { "Content-Type": type } }));
}

describe("request", () => {
  it("turns a problem into an error that carries the server's detail", async () => {
    const fetcher = respond(409, { type: "about:blank", title: "Conflict", status: 409, detail: "alice already has a workspace named \"web\"" });
    const error = await request("POST", "/workspaces", { name: "web" }, { fetcher }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(409);
    expect((error as ApiError).message).toBe('alice already has a workspace named "web"');
  });

  it("keeps the status line when the error is not JSON", async () => {
    const fetcher = vi.fn(async () => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
    const error = (await request("GET", "/workspaces", undefined, { fetcher }).catch((e: unknown) => e)) as ApiError;
    expect(error.detail).toBe("Bad Gateway (HTTP 502)");
  });

  it("sends the CSRF token on changes and not on reads", async () => {
    setCsrfToken("t0ken");
    const fetcher = respond(200, { ok: true }, "application/json");
    await request("POST", "/workspaces/1:stop", {}, { fetcher });
    await request("GET", "/workspaces", undefined, { fetcher });
    const [, post] = fetcher.mock.calls[0] as unknown as [string, RequestInit];
    const [, get] = fetcher.mock.calls[1] as unknown as [string, RequestInit];
    expect((post.headers as Record<string, string>)["X-CSRF-Token"]).toBe("t0ken");
    expect((get.headers as Record<string, string>)["X-CSRF-Token"]).toBeUndefined();
    setCsrfToken(null);
  });

  it("tells the listeners when a call finds the browser signed out", async () => {
    const heard = vi.fn();
    const stop = onSignedOut(heard);
    await request("GET", "/sessions", undefined, { fetcher: respond(401, { title: "Unauthorized", detail: "sign in" }) }).catch(() => undefined);
    expect(heard).toHaveBeenCalledTimes(1);
    stop();
  });
});

describe("query", () => {
  it("leaves out empty values and encodes the rest", () => {
    expect(query({ live: true, user: "", cursor: undefined, workspace_id: "a b" })).toBe("?live=true&workspace_id=a+b");
    expect(query({})).toBe("");
  });
});

// k8shell-api over fetch: JSON in and out, problem+json errors turned into ApiError with the
// server's `detail`, and the CSRF token echoed on every state-changing request.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly body?: unknown,
  ) {
    super(detail || title || `HTTP ${status}`);
    this.name = "ApiError";
  }
}

export const BASE = "/api/v1";

let csrfToken: string | null = null;

/** The CSRF token from `/me`, sent back in `X-CSRF-Token` (double submit). */
export function setCsrfToken(token: string | null | undefined): void {
  csrfToken = token ?? null;
}

/** Listeners told when the API says the browser is no longer signed in. */
const signedOut = new Set<() => void>();
export function onSignedOut(listener: () => void): () => void {
  signedOut.add(listener);
  return () => signedOut.delete(listener);
}

type Method = "GET" | "POST" | "DELETE";

export async function request<T>(
  method: Method,
  path: string,
  body?: unknown,
  init: { signal?: AbortSignal; fetcher?: typeof fetch } = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const fetcher = init.fetcher ?? fetch;
  const response = await fetcher(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal: init.signal,
  });
  if (!response.ok) {
    throw await errorOf(response, path);
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** The error a failed response stands for; a 401 also tells the listeners. */
export async function errorOf(response: Response, path: string): Promise<ApiError> {
  let title = response.statusText;
  let detail = "";
  let body: unknown;
  try {
    body = await response.json();
    const problem = body as { title?: string; detail?: string };
    title = problem.title ?? title;
    detail = problem.detail ?? "";
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  if (response.status === 401 && !path.startsWith("/me")) {
    signedOut.forEach((listener) => listener());
  }
  return new ApiError(response.status, title, detail || `${title} (HTTP ${response.status})`, body);
}

export const api = {
  get: <T>(path: string, signal?: AbortSignal) => request<T>("GET", path, undefined, { signal }),
  post: <T>(path: string, body?: unknown) => request<T>("POST", path, body ?? {}),
  del: <T>(path: string) => request<T>("DELETE", path),
};

/** `?a=1&b=x` from the entries that have a value. */
export function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Where the sign-in starts; the API sends the browser back to `returnTo` afterwards. */
export function loginUrl(returnTo: string): string {
  return `${BASE}/auth/login${query({ return_to: returnTo })}`;
}

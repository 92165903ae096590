// Who is signed in: `/me` once at start, and again after a 401 anywhere.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, onSignedOut, setCsrfToken } from "./api";
import type { Me } from "./types";

export type Auth = { state: "loading" } | { state: "signed-out"; error?: unknown } | { state: "signed-in"; me: Me };

export function isAdmin(me: Me): boolean {
  return me.user.groups.includes("admins");
}

export function useAuth(): [Auth, () => Promise<void>] {
  const [auth, setAuth] = useState<Auth>({ state: "loading" });
  const refresh = async () => {
    try {
      const me = await api.get<Me>("/me");
      setCsrfToken(me.csrf_token);
      setAuth({ state: "signed-in", me });
    } catch (error) {
      setCsrfToken(null);
      setAuth(error instanceof ApiError && error.status === 401 ? { state: "signed-out" } : { state: "signed-out", error });
    }
  };
  useEffect(() => {
    void refresh();
    return onSignedOut(() => {
      setCsrfToken(null);
      setAuth({ state: "signed-out" });
    });
  }, []);
  return [auth, refresh];
}

export async function logOut(): Promise<void> {
  await api.post("/auth/logout");
  setCsrfToken(null);
}

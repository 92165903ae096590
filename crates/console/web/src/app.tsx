// The console's frame: skip link, navigation, who is signed in, and the page for the path.
import { useEffect } from "preact/hooks";
import { ErrorMessage, Link } from "./components/common";
import { match, navigate, useLocation } from "./router";
import { isAdmin, logOut, useAuth } from "./session";
import { loginUrl } from "./api";
import type { Me } from "./types";
import { WorkspacesPage } from "./pages/workspaces";
import { NewWorkspacePage } from "./pages/workspace-new";
import { WorkspacePage } from "./pages/workspace";
import { TerminalPage } from "./pages/terminal";
import { SessionsPage } from "./pages/sessions";
import { SessionPage } from "./pages/session";
import { KeysPage } from "./pages/keys";
import { TokensPage } from "./pages/tokens";
import { UsersPage } from "./pages/users";
import { DecisionsPage } from "./pages/decisions";

export function App() {
  const [auth, refresh] = useAuth();
  const { path } = useLocation();
  if (auth.state === "loading") {
    return <p class="loading" aria-busy="true">Loading…</p>;
  }
  if (auth.state === "signed-out") {
    return <SignIn error={auth.error} />;
  }
  return (
    <Frame me={auth.me} path={path} onLoggedOut={refresh}>
      <Page me={auth.me} path={path} />
    </Frame>
  );
}

function SignIn({ error }: { error?: unknown }) {
  const here = location.pathname + location.search;
  return (
    <main id="main" class="sign-in">
      <h1>k8shell</h1>
      <p>Your workspaces, their terminals and their sessions.</p>
      <ErrorMessage error={error} />
      <a class="button" href={loginUrl(here === "/" ? "/workspaces" : here)}>
        Sign in
      </a>
    </main>
  );
}

const NAV: { to: string; label: string; admin?: boolean }[] = [
  { to: "/workspaces", label: "Workspaces" },
  { to: "/sessions", label: "Sessions" },
  { to: "/keys", label: "SSH keys" },
  { to: "/tokens", label: "API tokens" },
  { to: "/admin/users", label: "Users", admin: true },
  { to: "/admin/decisions", label: "Decisions", admin: true },
];

function Frame(props: { me: Me; path: string; onLoggedOut: () => void; children: preact.ComponentChildren }) {
  const admin = isAdmin(props.me);
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link to="/workspaces" class="brand">
          k8shell
        </Link>
        <nav aria-label="Main">
          <ul>
            {NAV.filter((item) => admin || !item.admin).map((item) => (
              <li key={item.to}>
                <Link to={item.to} aria-current={props.path.startsWith(item.to) ? "page" : undefined}>
                  {item.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span title={props.me.user.email} data-testid="whoami">
            {props.me.user.username}
          </span>
          <button
            type="button"
            class="secondary"
            onClick={async () => {
              await logOut().catch(() => undefined);
              history.replaceState(null, "", "/");
              props.onLoggedOut();
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {props.children}
      </main>
    </>
  );
}

function Page({ me, path }: { me: Me; path: string }) {
  const routes: [string, (p: Record<string, string>) => preact.JSX.Element][] = [
    ["/workspaces", () => <WorkspacesPage me={me} />],
    ["/workspaces/new", () => <NewWorkspacePage />],
    ["/workspaces/:id", (p) => <WorkspacePage id={p.id} />],
    ["/workspaces/:id/terminal", (p) => <TerminalPage id={p.id} />],
    ["/sessions", () => <SessionsPage me={me} />],
    ["/sessions/:id", (p) => <SessionPage id={p.id} me={me} />],
    ["/keys", () => <KeysPage />],
    ["/tokens", () => <TokensPage />],
    ["/admin/users", () => <UsersPage />],
    ["/admin/decisions", () => <DecisionsPage />],
  ];
  for (const [pattern, render] of routes) {
    const params = match(pattern, path);
    if (params) return <Titled path={path}>{render(params)}</Titled>;
  }
  if (path === "/" || path === "") return <Redirect to="/workspaces" />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        Nothing lives at <code>{path}</code>. <Link to="/workspaces">Go to your workspaces</Link>.
      </p>
    </section>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, true), [to]);
  return null;
}

/** Moves focus to the new page's heading, so keyboard and screen reader users land there. */
function Titled({ path, children }: { path: string; children: preact.JSX.Element }) {
  useEffect(() => {
    const heading = document.querySelector<HTMLElement>("main h1");
    document.title = heading?.textContent ? `${heading.textContent} · k8shell` : "k8shell";
  }, [path]);
  return children;
}

import { useState } from "preact/hooks";
import { api } from "../api";
import { CopyButton, DataTable, ErrorMessage, Field, RowButton, formatTime, useLoad } from "../components/common";
import type { CreatedToken, Token } from "../types";

const LIFETIMES: [string, number | undefined][] = [
  ["30 days", 30 * 86400],
  ["90 days", 90 * 86400],
  ["1 year", 365 * 86400],
  ["No expiry", undefined],
];

export function TokensPage() {
  const tokens = useLoad((signal) => api.get<Token[]>("/tokens", signal), []);
  const [name, setName] = useState("");
  const [ttl, setTtl] = useState("0");
  const [created, setCreated] = useState<CreatedToken | null>(null);
  const [error, setError] = useState<unknown>(null);
  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      const made = await api.post<CreatedToken>("/tokens", { name, ttl_seconds: LIFETIMES[Number(ttl)][1] ?? null });
      setCreated(made);
      setName("");
      tokens.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section>
      <h1>API tokens</h1>
      <p>
        A token lets scripts and the CLI act as you: <code>K8SHELL_TOKEN=… k8shell ws ls</code>.
      </p>
      {created ? (
        <div class="notice" role="status">
          <p>
            Token <strong>{created.token.name}</strong> created. Copy it now: it is not shown again.
          </p>
          <div class="command">
            <code data-testid="token-secret">{created.secret}</code>
            <CopyButton text={created.secret} label="Copy the token" />
          </div>
        </div>
      ) : null}
      <ErrorMessage error={tokens.error} />
      <DataTable
        caption="Your API tokens"
        columns={[{ label: "Name" }, { label: "Prefix" }, { label: "Created" }, { label: "Expires" }, { label: "" }]}
      >
            {(tokens.value ?? []).map((t) => (
              <tr key={t.id}>
                <th scope="row">{t.name}</th>
                <td>
                  <code>{t.prefix}…</code>
                </td>
                <td>{formatTime(t.created_at)}</td>
                <td>{t.revoked_at ? `revoked ${formatTime(t.revoked_at)}` : t.expires_at ? formatTime(t.expires_at) : "never"}</td>
                <td>
                  {t.revoked_at ? null : (
                    <RowButton
                      label="Revoke"
                      subject={t.name}
                      kind="danger"
                      onClick={() =>
                        api
                          .del(`/tokens/${encodeURIComponent(t.id)}`)
                          .then(() => tokens.reload())
                          .catch((e: unknown) => setError(e))
                      }
                    />
                  )}
                </td>
              </tr>
            ))}
      </DataTable>
      <form onSubmit={create} class="stack">
        <Field label="New token name" id="token-name">
          <input id="token-name" value={name} required onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Expires after" id="token-ttl">
          <select id="token-ttl" value={ttl} onChange={(e) => setTtl(e.currentTarget.value)}>
            {LIFETIMES.map(([label], i) => (
              <option key={label} value={String(i)}>
                {label}
              </option>
            ))}
          </select>
        </Field>
        <ErrorMessage error={error} />
        <div class="actions">
          <button type="submit">Create token</button>
        </div>
      </form>
    </section>
  );
}

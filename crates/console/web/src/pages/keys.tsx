import { useState } from "preact/hooks";
import { api } from "../api";
import { ErrorMessage, Field, RowButton, formatTime, useLoad } from "../components/common";
import type { Key } from "../types";

export function KeysPage() {
  const keys = useLoad((signal) => api.get<Key[]>("/keys", signal), []);
  const [text, setText] = useState("");
  const [error, setError] = useState<unknown>(null);
  const add = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      await api.post("/keys", { public_key: text.trim() });
      setText("");
      keys.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section>
      <h1>SSH keys</h1>
      <p>These keys let you in with ssh, scp, sftp and your editor's remote mode.</p>
      <ErrorMessage error={keys.error} />
      {keys.value?.length === 0 ? <p class="empty">You have no keys yet.</p> : null}
      <ul class="cards">
        {(keys.value ?? []).map((k) => (
          <li key={k.fingerprint}>
            <div>
              <strong>{k.comment || k.key_type}</strong> <code>{k.fingerprint}</code>
            </div>
            <small>
              Added {formatTime(k.added_at)} · last used {formatTime(k.last_used_at)}
            </small>
            <RowButton
              label="Remove"
              subject={`key ${k.fingerprint}`}
              kind="danger"
              onClick={() =>
                api
                  .del(`/keys/${encodeURIComponent(k.fingerprint)}`)
                  .then(() => keys.reload())
                  .catch((e: unknown) => setError(e))
              }
            />
          </li>
        ))}
      </ul>
      <form onSubmit={add} class="stack">
        <Field label="Add a public key" id="new-key" hint="The contents of ~/.ssh/id_ed25519.pub, for example.">
          <textarea
            id="new-key"
            rows={3}
            value={text}
            required
            aria-describedby="new-key-hint"
            placeholder="ssh-ed25519 AAAA… you@laptop"
            onInput={(e) => setText(e.currentTarget.value)}
          />
        </Field>
        <ErrorMessage error={error} />
        <div class="actions">
          <button type="submit">Add key</button>
        </div>
      </form>
    </section>
  );
}

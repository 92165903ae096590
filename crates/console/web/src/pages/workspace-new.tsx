import { useEffect, useState } from "preact/hooks";
import { ApiError, api } from "../api";
import { BlueprintEditor } from "../components/blueprint-editor";
import { ErrorMessage, Field, useLoad } from "../components/common";
import { navigate } from "../router";
import type { BlueprintError, Example, Validation, Workspace } from "../types";

// As the provisioner checks it: a DNS label, since it becomes the hostname.
export const NAME = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function NewWorkspacePage() {
  const examples = useLoad((signal) => api.get<Example[]>("/blueprints", signal), []);
  const [name, setName] = useState("");
  const [mode, setMode] = useState<"example" | "source">("example");
  const [example, setExample] = useState("");
  const [source, setSource] = useState("");
  const [errors, setErrors] = useState<BlueprintError[]>([]);
  const [checked, setChecked] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const first = examples.value?.[0];
    if (first && !example) {
      setExample(first.name);
      if (!source) setSource(first.source);
    }
  }, [examples.value]);

  const nameProblem = name && !NAME.test(name) ? "Use 1 to 63 lower-case letters, digits and dashes, starting with a letter and not ending with a dash." : "";

  const validate = async (): Promise<boolean> => {
    const answer = await api.post<Validation>("/blueprints/validate", { source });
    setErrors(answer.errors);
    setChecked(answer.valid ? (answer.image_tag ?? "valid") : null);
    return answer.valid;
  };

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    if (!name || nameProblem) {
      setError(new Error(nameProblem || "Give the workspace a name."));
      return;
    }
    setBusy(true);
    try {
      if (mode === "source" && !(await validate())) return;
      const body = mode === "example" ? { name, blueprint: example } : { name, blueprint_source: source };
      const workspace = await api.post<Workspace>("/workspaces", body);
      navigate(`/workspaces/${workspace.id}`);
    } catch (e) {
      const problem = e instanceof ApiError ? (e.body as { errors?: BlueprintError[] } | undefined) : undefined;
      if (problem?.errors?.length) setErrors(problem.errors);
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <h1>New workspace</h1>
      <form onSubmit={create} class="stack" aria-describedby="new-help">
        <p id="new-help">A workspace is built from a blueprint: pick an example or write your own in Nickel.</p>
        <Field label="Name" id="ws-name" hint="Lower-case letters, digits and dashes; it appears in ssh user+name.">
          <input
            id="ws-name"
            name="name"
            value={name}
            required
            autocomplete="off"
            aria-invalid={Boolean(nameProblem)}
            aria-describedby="ws-name-hint"
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </Field>
        {nameProblem ? <p class="error">{nameProblem}</p> : null}
        <fieldset>
          <legend>Blueprint</legend>
          <label class="inline">
            <input type="radio" name="mode" checked={mode === "example"} onChange={() => setMode("example")} /> An example
          </label>
          <label class="inline">
            <input type="radio" name="mode" checked={mode === "source"} onChange={() => setMode("source")} /> Nickel source
          </label>
        </fieldset>
        <ErrorMessage error={examples.error} />
        {mode === "example" ? (
          <Field label="Example" id="ws-example">
            <select id="ws-example" value={example} onChange={(e) => setExample(e.currentTarget.value)}>
              {(examples.value ?? []).map((x) => (
                <option key={x.name} value={x.name}>
                  {x.name} — {x.description}
                </option>
              ))}
            </select>
          </Field>
        ) : (
          <div class="field">
            <label for="ws-source">Nickel source</label>
            <select
              aria-label="Start from an example"
              onChange={(e) => {
                const chosen = examples.value?.find((x) => x.name === e.currentTarget.value);
                if (chosen) setSource(chosen.source);
              }}
            >
              <option value="">Start from an example…</option>
              {(examples.value ?? []).map((x) => (
                <option key={x.name} value={x.name}>
                  {x.name}
                </option>
              ))}
            </select>
            <BlueprintEditor
              id="ws-source"
              value={source}
              errors={errors}
              onInput={(v) => {
                setSource(v);
                setChecked(null);
              }}
            />
            <div class="actions">
              <button
                type="button"
                class="secondary"
                onClick={() => validate().catch((e: unknown) => setError(e))}
              >
                Check
              </button>
              {checked ? <span role="status">The blueprint is valid.</span> : null}
            </div>
          </div>
        )}
        <ErrorMessage error={error} />
        <div class="actions">
          <button type="submit" disabled={busy}>
            {busy ? "Creating…" : "Create workspace"}
          </button>
        </div>
      </form>
    </section>
  );
}

import { useState } from "preact/hooks";
import { api, query } from "../api";
import { DataTable, ErrorMessage, formatTime, useLoad } from "../components/common";
import type { Decision, Page } from "../types";

export function DecisionsPage() {
  const [filters, setFilters] = useState<{ domain?: string; user?: string; denied?: string }>({});
  const [cursor, setCursor] = useState<string | undefined>(undefined);
  const page = useLoad(
    (signal) => api.get<Page<Decision>>(`/decisions${query({ ...filters, limit: 100, cursor })}`, signal),
    [JSON.stringify(filters), cursor],
  );
  return (
    <section>
      <h1>Policy decisions</h1>
      <form
        class="filters"
        aria-label="Filter decisions"
        onSubmit={(e) => {
          e.preventDefault();
          const form = new FormData(e.currentTarget);
          const text = (name: string) => {
            const value = form.get(name);
            return typeof value === "string" && value ? value : undefined;
          };
          setCursor(undefined);
          setFilters({ domain: text("domain"), user: text("user"), denied: text("denied") });
        }}
      >
        <label for="d-domain">Domain</label>
        <select id="d-domain" name="domain">
          <option value="">All</option>
          {["authentication", "ssh", "api", "onboarding", "provision"].map((d) => (
            <option key={d} value={d}>
              {d}
            </option>
          ))}
        </select>
        <label for="d-user">User</label>
        <input id="d-user" name="user" autocomplete="off" />
        <label class="inline">
          <input type="checkbox" name="denied" value="true" /> Denied only
        </label>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <ErrorMessage error={page.error} />
      <DataTable
        caption="Policy decisions, newest first"
        columns={[{ label: "When" }, { label: "Domain" }, { label: "Verdict" }, { label: "Input" }, { label: "Reasons", wide: true }]}
      >
            {(page.value?.items ?? []).map((d) => (
              <tr key={d.id}>
                <th scope="row">{formatTime(d.at)}</th>
                <td>{d.domain}</td>
                <td>{d.allow ? <span class="badge state-running">allowed</span> : <span class="badge state-failed">denied</span>}</td>
                <td>
                  <code class="clip">{JSON.stringify(d.input)}</code>
                </td>
                <td class="wide-only">{d.reasons.join("; ")}</td>
              </tr>
            ))}
      </DataTable>
      {page.value?.next_cursor ? (
        <button type="button" class="secondary" onClick={() => setCursor(page.value?.next_cursor ?? undefined)}>
          Older decisions
        </button>
      ) : null}
    </section>
  );
}

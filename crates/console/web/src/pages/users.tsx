import { useState } from "preact/hooks";
import { api } from "../api";
import { ConfirmDialog, DataTable, ErrorMessage, RowButton, StateBadge, formatTime, useLoad } from "../components/common";
import type { Page, User } from "../types";

export function UsersPage() {
  const users = useLoad((signal) => api.get<Page<User>>("/users?limit=500", signal), []);
  const [suspending, setSuspending] = useState<User | null>(null);
  const [error, setError] = useState<unknown>(null);
  const act = async (user: User, verb: "suspend" | "activate") => {
    setError(null);
    try {
      await api.post(`/users/${encodeURIComponent(user.username)}:${verb}`);
      users.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <section>
      <h1>Users</h1>
      <ErrorMessage error={users.error ?? error} />
      <DataTable
        caption="Users"
        columns={[{ label: "User" }, { label: "Email" }, { label: "Groups" }, { label: "State" }, { label: "Last sign-in", wide: true }, { label: "" }]}
      >
            {(users.value?.items ?? []).map((u) => (
              <tr key={u.id} data-user={u.username}>
                <th scope="row">{u.username}</th>
                <td>{u.email}</td>
                <td>{u.groups.join(", ")}</td>
                <td>
                  <StateBadge state={u.state} />
                </td>
                <td class="wide-only">{formatTime(u.last_login_at)}</td>
                <td>
                  {u.state === "active" ? (
                    <RowButton label="Suspend" subject={u.username} kind="danger" onClick={() => setSuspending(u)} />
                  ) : (
                    <RowButton label="Activate" subject={u.username} kind="secondary" onClick={() => act(u, "activate")} />
                  )}
                </td>
              </tr>
            ))}
      </DataTable>
      <ConfirmDialog
        open={suspending !== null}
        title={`Suspend ${suspending?.username ?? ""}?`}
        confirmLabel="Suspend"
        danger
        onCancel={() => setSuspending(null)}
        onConfirm={() => {
          const user = suspending;
          setSuspending(null);
          if (user) void act(user, "suspend");
        }}
      >
        <p>They can no longer sign in, use ssh or call the API until activated again.</p>
      </ConfirmDialog>
    </section>
  );
}

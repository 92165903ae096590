// The shapes of k8shell-api's JSON (crates/api-server/openapi.json), as the console uses them.

export interface User {
  id: string;
  username: string;
  display_name: string;
  email: string;
  groups: string[];
  state: string;
  created_at?: string | null;
  last_login_at?: string | null;
}

export interface Me {
  user: User;
  signed_in_with: string;
  csrf_token?: string | null;
}

export interface Workspace {
  id: string;
  owner: string;
  name: string;
  blueprint: string;
  image: string;
  runtime: string;
  state: string;
  desired: string;
  reason: string;
  idle_timeout_seconds: number;
  warnings: string[];
  ssh_command: string;
  spec: Record<string, unknown>;
  created_at?: string | null;
  last_activity_at?: string | null;
}

export interface WorkspaceEvent {
  workspace: Workspace;
  previous?: string | null;
}

export interface Example {
  name: string;
  description: string;
  source: string;
}

export interface BlueprintError {
  message: string;
  line?: number | null;
  column?: number | null;
}

export interface Validation {
  valid: boolean;
  errors: BlueprintError[];
  image_tag?: string | null;
}

export interface Session {
  id: string;
  username: string;
  workspace_id: string;
  workspace: string;
  kind: string;
  client_addr: string;
  client_version: string;
  admin_access: boolean;
  end_reason: string;
  live: boolean;
  bytes_in: number;
  bytes_out: number;
  started_at?: string | null;
  ended_at?: string | null;
  last_activity_at?: string | null;
}

export interface TimelineEvent {
  seq: number;
  kind: string;
  channel: number;
  data: Record<string, unknown>;
  at?: string | null;
}

export interface Recording {
  id: string;
  channel: number;
  kind: string;
  duration: number;
  size: number;
  complete: boolean;
}

export interface SessionDetails {
  session: Session;
  timeline: TimelineEvent[];
  recordings: Recording[];
}

export interface Key {
  fingerprint: string;
  key_type: string;
  comment: string;
  public_key: string;
  added_at?: string | null;
  last_used_at?: string | null;
}

export interface Token {
  id: string;
  name: string;
  prefix: string;
  created_at?: string | null;
  expires_at?: string | null;
  revoked_at?: string | null;
}

export interface CreatedToken {
  token: Token;
  secret: string;
}

export interface Decision {
  id: string;
  domain: string;
  allow: boolean;
  reasons: string[];
  input: Record<string, unknown>;
  revision: string;
  at?: string | null;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

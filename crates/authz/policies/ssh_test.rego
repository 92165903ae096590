package k8shell.ssh_test

import rego.v1

import data.k8shell.ssh

ws := {"id": "ws-1", "owner": "alice", "allow": {"port_forwarding": true, "sftp": false}}

req(user, groups, request) := {"v": 1, "user": {"username": user, "groups": groups}, "workspace": ws, "request": request}

test_owner_enters if {
	d := ssh.decision with input as req("alice", [], "shell")
	d.allow
	not d.admin_access
}

test_stranger_denied if {
	d := ssh.decision with input as req("bob", ["dev"], "shell")
	not d.allow
	d.reasons == ["bob may not enter workspace ws-1 of alice"]
}

test_admin_enters_flagged if {
	d := ssh.decision with input as req("root", ["admins"], "exec")
	d.allow
	d.admin_access
}

test_grant if {
	d := ssh.decision with input as req("bob", [], "shell") with data.config.ssh.grants as {"ws-1": ["bob"]}
	d.allow
	not d.admin_access
}

test_blueprint_forbids_sftp if {
	d := ssh.decision with input as req("alice", [], "sftp")
	not d.allow
	d.reasons == ["sftp is disabled by the workspace's blueprint"]
}

test_forwarding_allowed_by_default if {
	ssh.decision.allow with input as {"v": 1, "user": {"username": "alice", "groups": []}, "workspace": {"id": "ws-2", "owner": "alice"}, "request": "port_forwarding"}
}

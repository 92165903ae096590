package k8shell.api_test

import rego.v1

import data.k8shell.api

test_admin_may_suspend if {
	api.decision.allow with input as {"v": 1, "user": {"username": "root", "groups": ["admins"]}, "endpoint": "users.suspend"}
}

test_auditor_reads_recordings_not_suspends if {
	api.decision.allow with input as {"v": 1, "user": {"username": "audrey", "groups": ["auditors"]}, "endpoint": "recordings.read_all"}
	d := api.decision with input as {"v": 1, "user": {"username": "audrey", "groups": ["auditors"]}, "endpoint": "users.suspend"}
	not d.allow
	d.reasons == ["audrey may not use users.suspend"]
}

test_unknown_endpoint_denied if {
	d := api.decision with input as {"v": 1, "user": {"username": "root", "groups": ["admins"]}, "endpoint": "nope"}
	not d.allow
}

test_auditor_reads_decisions_but_manages_no_workspaces if {
	api.decision.allow with input as {"v": 1, "user": {"username": "audrey", "groups": ["auditors"]}, "endpoint": "decisions.list"}
	d := api.decision with input as {"v": 1, "user": {"username": "audrey", "groups": ["auditors"]}, "endpoint": "workspaces.manage_all"}
	not d.allow
}

test_only_admins_create_users if {
	api.decision.allow with input as {"v": 1, "user": {"username": "root", "groups": ["admins"]}, "endpoint": "users.create"}
	d := api.decision with input as {"v": 1, "user": {"username": "alice", "groups": ["dev"]}, "endpoint": "users.create"}
	not d.allow
}

test_only_admins_watch_live_sessions if {
	api.decision.allow with input as {"v": 1, "user": {"username": "root", "groups": ["admins"]}, "endpoint": "sessions.watch"}
	d := api.decision with input as {"v": 1, "user": {"username": "audrey", "groups": ["auditors"]}, "endpoint": "sessions.watch"}
	not d.allow
}

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

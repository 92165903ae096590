package k8shell.authentication_test

import rego.v1

import data.k8shell.authentication

user(groups, state) := {"username": "alice", "groups": groups, "state": state}

test_publickey_allowed if {
	authentication.decision.allow with input as {"v": 1, "user": user(["dev"], "active"), "method": "publickey", "source_ip": "192.0.2.1"}
}

test_admins_only_publickey if {
	d := authentication.decision with input as {"v": 1, "user": user(["admins"], "active"), "method": "keyboard-interactive", "source_ip": "192.0.2.1"}
	not d.allow
	d.reasons == ["sign-in method \"keyboard-interactive\" is not allowed for this account"]
}

test_a_group_with_no_methods_gets_none if {
	d := authentication.decision with input as {"v": 1, "user": user(["contractors"], "active"), "method": "publickey", "source_ip": "192.0.2.1"}
		with data.config.authentication.methods_by_group as {"contractors": [], "*": ["publickey"]}
	not d.allow
}

test_suspended_refused if {
	d := authentication.decision with input as {"v": 1, "user": user([], "suspended"), "method": "publickey", "source_ip": "192.0.2.1"}
	not d.allow
	"the account is suspended" in d.reasons
}

test_denied_cidr if {
	d := authentication.decision with input as {"v": 1, "user": user([], "active"), "method": "publickey", "source_ip": "198.51.100.9"}
		with data.config.authentication.deny_cidrs as ["198.51.100.0/24"]
	not d.allow
}

test_outside_allow_list if {
	d := authentication.decision with input as {"v": 1, "user": user([], "active"), "method": "publickey", "source_ip": "203.0.113.5"}
		with data.config.authentication.allow_cidrs as ["10.0.0.0/8"]
	not d.allow
}

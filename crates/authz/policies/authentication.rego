# Whether a login attempt may proceed.
# Input v1: {"v": 1, "user": {"username", "groups": [...], "state": "active"|"suspended"},
#            "method": "publickey"|"keyboard-interactive"|..., "source_ip": "203.0.113.7"}
package k8shell.authentication

import rego.v1

cfg := data.config.authentication

default allow := false

version_ok if input.v == 1

active if input.user.state == "active"

# Methods allowed to any of the user's groups, or to everyone ("*") when no group lists any.
group_methods contains m if {
	some group in input.user.groups
	some m in cfg.methods_by_group[group]
}

method_allowed if input.method in group_methods

# Users in a group that is listed (even with no methods) never fall back to "*".
listed if {
	some group in input.user.groups
	cfg.methods_by_group[group]
}

method_allowed if {
	not listed
	input.method in cfg.methods_by_group["*"]
}

source_denied if {
	some cidr in cfg.deny_cidrs
	net.cidr_contains(cidr, input.source_ip)
}

source_allowed if {
	some cidr in cfg.allow_cidrs
	net.cidr_contains(cidr, input.source_ip)
}

allow if {
	version_ok
	active
	method_allowed
	source_allowed
	not source_denied
}

reasons contains "unsupported input version: send v = 1" if not version_ok

reasons contains "the account is suspended" if {
	version_ok
	not active
}

reasons contains sprintf("sign-in method %q is not allowed for this account", [input.method]) if {
	version_ok
	not method_allowed
}

reasons contains sprintf("connections from %s are not allowed", [input.source_ip]) if {
	version_ok
	source_denied
}

reasons contains sprintf("connections from %s are not allowed", [input.source_ip]) if {
	version_ok
	not source_allowed
}

decision := {"allow": allow, "reasons": sort([r | some r in reasons]), "cacheable": false}

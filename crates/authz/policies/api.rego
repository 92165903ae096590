# Whether a caller may use an administrative REST endpoint. Ordinary endpoints that act on the
# caller's own things are checked by the api-server itself.
# Input v1: {"v": 1, "user": {"username", "groups": [...]}, "endpoint": "users.suspend"}
package k8shell.api

import rego.v1

default allow := false

version_ok if input.v == 1

known if data.config.api.admin_endpoints[input.endpoint]

allow if {
	version_ok
	some group in input.user.groups
	group in data.config.api.admin_endpoints[input.endpoint]
}

reasons contains "unsupported input version: send v = 1" if not version_ok

reasons contains sprintf("unknown endpoint %q", [input.endpoint]) if {
	version_ok
	not known
}

reasons contains sprintf("%s may not use %s", [input.user.username, input.endpoint]) if {
	version_ok
	known
	not allow
}

decision := {"allow": allow, "reasons": sort([r | some r in reasons]), "cacheable": false}

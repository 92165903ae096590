# Whether a user may create (or resize) a workspace.
# Input v1: {"v": 1, "user": {"username", "groups": [...]}, "current_workspaces": n,
#            "blueprint": "name", "resources": {"cpu_millis", "memory_bytes", "disk_bytes"}}
package k8shell.provision

import rego.v1

cfg := data.config.provision

default allow := false

version_ok if input.v == 1

# The most generous limit among the user's groups, or the default ("*").
limit_values(table) := values if {
	mine := [table[g] | some g in input.user.groups; table[g]]
	count(mine) > 0
	values := mine
} else := [table["*"]]

max_workspaces := max(limit_values(cfg.max_workspaces))

ceiling(resource) := max([c[resource] | some c in limit_values(cfg.ceilings)])

blueprint_allowed if {
	some list in limit_values(cfg.blueprints)
	some pattern in list
	glob.match(pattern, [], input.blueprint)
}

within_count if {
	is_number(input.current_workspaces)
	input.current_workspaces < max_workspaces
}

resource_names := ["cpu_millis", "memory_bytes", "disk_bytes"]

# Stated positively: a missing, null or non-numeric size, or a group without a ceiling for it,
# is not "within the ceiling".
resources_ok if {
	every resource in resource_names {
		is_number(input.resources[resource])
		input.resources[resource] <= ceiling(resource)
	}
}

over contains resource if {
	some resource in resource_names
	is_number(input.resources[resource])
	input.resources[resource] > ceiling(resource)
}

allow if {
	version_ok
	within_count
	blueprint_allowed
	resources_ok
}

reasons contains "unsupported input version: send v = 1" if not version_ok

reasons contains sprintf("you have %d workspaces; the limit is %d", [input.current_workspaces, max_workspaces]) if {
	version_ok
	not within_count
}

reasons contains sprintf("blueprint %q is not allowed for you", [input.blueprint]) if {
	version_ok
	not blueprint_allowed
}

reasons contains sprintf("resources.%s must be a number of %s", [resource, unit]) if {
	version_ok
	some resource in resource_names
	not is_number(input.resources[resource])
	unit := {"cpu_millis": "millicores", "memory_bytes": "bytes", "disk_bytes": "bytes"}[resource]
}

reasons contains "current_workspaces must be a number" if {
	version_ok
	not is_number(input.current_workspaces)
}

reasons contains sprintf("%s %d is above your ceiling of %d", [resource, input.resources[resource], ceiling(resource)]) if {
	version_ok
	some resource in over
}

decision := {"allow": allow, "reasons": sort([r | some r in reasons]), "cacheable": false}

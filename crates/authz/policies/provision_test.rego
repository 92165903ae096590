package k8shell.provision_test

import rego.v1

import data.k8shell.provision

small := {"cpu_millis": 1000, "memory_bytes": 1073741824, "disk_bytes": 10737418240}

req(groups, n, resources) := {"v": 1, "user": {"username": "alice", "groups": groups}, "current_workspaces": n, "blueprint": "rust", "resources": resources}

test_within_limits if {
	provision.decision.allow with input as req([], 0, small)
}

test_too_many_workspaces if {
	d := provision.decision with input as req([], 3, small)
	not d.allow
	d.reasons == ["you have 3 workspaces; the limit is 3"]
}

test_admins_get_more if {
	provision.decision.allow with input as req(["admins"], 10, small)
}

test_ceiling if {
	d := provision.decision with input as req([], 0, object.union(small, {"cpu_millis": 8000}))
	not d.allow
	d.reasons == ["cpu_millis 8000 is above your ceiling of 4000"]
}

test_missing_or_null_sizes_are_denied if {
	d := provision.decision with input as req([], 0, {})
	not d.allow
	"resources.cpu_millis must be a number of millicores" in d.reasons
	not provision.decision.allow with input as req([], 0, object.union(small, {"disk_bytes": null}))
	not provision.decision.allow with input as object.union(req([], 0, small), {"current_workspaces": null})
}

test_a_group_without_a_ceiling_gets_nothing if {
	not provision.decision.allow with input as req(["odd"], 0, small)
		with data.config.provision.ceilings as {"odd": {"cpu_millis": 1}, "*": {}}
		with data.config.provision.max_workspaces as {"odd": 5}
}

test_blueprint_not_allowed if {
	d := provision.decision with input as req([], 0, small) with data.config.provision.blueprints as {"*": ["python-*"]}
	not d.allow
}

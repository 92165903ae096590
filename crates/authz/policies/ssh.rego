# Whether a user may open SSH into a workspace, and what the session may do.
# Input v1: {"v": 1, "user": {"username", "groups": [...]},
#            "workspace": {"id", "owner", "allow": {"port_forwarding": bool, "sftp": bool}},
#            "request": "shell"|"exec"|"sftp"|"port_forwarding"}
package k8shell.ssh

import rego.v1

default allow := false

version_ok if input.v == 1

owner if input.user.username == input.workspace.owner

admin if "admins" in input.user.groups

granted if input.user.username in object.get(data.config.ssh.grants, input.workspace.id, [])

may_enter if owner

may_enter if admin

may_enter if granted

# What the blueprint allows (allowed unless it says false).
feature_allowed if input.request in {"shell", "exec"}

feature_allowed if {
	input.request in {"sftp", "port_forwarding"}
	object.get(input.workspace, ["allow", input.request], true) != false
}

allow if {
	version_ok
	may_enter
	feature_allowed
}

# An administrator in someone else's workspace: the session is marked "admin access".
admin_access if {
	allow
	not owner
	not granted
	admin
}

default admin_access := false

reasons contains "unsupported input version: send v = 1" if not version_ok

reasons contains sprintf("%s may not enter workspace %s of %s", [input.user.username, input.workspace.id, input.workspace.owner]) if {
	version_ok
	not may_enter
}

reasons contains sprintf("%s is disabled by the workspace's blueprint", [input.request]) if {
	version_ok
	may_enter
	not feature_allowed
}

decision := {
	"allow": allow,
	"reasons": sort([r | some r in reasons]),
	"admin_access": admin_access,
	"cacheable": false,
}

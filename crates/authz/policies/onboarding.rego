# Who may get an account at their first login.
# Input v1: {"v": 1, "email": "...", "email_verified": bool, "groups": [...], "issuer": "..."}
package k8shell.onboarding

import rego.v1

cfg := data.config.onboarding

default allow := false

version_ok if input.v == 1

default domain := ""

# Exactly one `@`: a quoted local part such as `"x@example.com@"@evil.com` names no domain here.
domain := lower(parts[1]) if {
	parts := split(input.email, "@")
	count(parts) == 2
}

# Only a verified address counts: anyone can type x@corp.com into a self-service sign-up.
by_domain if {
	version_ok
	input.email_verified == true
	some allowed in cfg.allowed_email_domains
	lower(allowed) == domain
}

by_group if {
	version_ok
	some group in input.groups
	group in cfg.allowed_groups
}

allow if by_domain

allow if by_group

reasons contains "unsupported input version: send v = 1" if not version_ok

reasons contains sprintf("neither the email domain %q nor any of the groups %v may sign up", [domain, input.groups]) if {
	version_ok
	not allow
}

decision := {"allow": allow, "reasons": sort([r | some r in reasons]), "cacheable": false}

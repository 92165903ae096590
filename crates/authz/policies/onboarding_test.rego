package k8shell.onboarding_test

import rego.v1

import data.k8shell.onboarding

test_allowed_domain if {
	onboarding.decision.allow with input as {"v": 1, "email": "alice@Example.com", "email_verified": true, "groups": []}
}

test_unverified_domain_denied if {
	not onboarding.decision.allow with input as {"v": 1, "email": "alice@example.com", "email_verified": false, "groups": []}
}

test_a_quoted_local_part_does_not_fake_the_domain if {
	not onboarding.decision.allow with input as {"v": 1, "email": "\"x@example.com@\"@evil.com", "email_verified": true, "groups": []}
}

test_allowed_group if {
	onboarding.decision.allow with input as {"v": 1, "email": "carol@agency.net", "groups": ["k8shell-users"]}
}

test_stranger_denied if {
	d := onboarding.decision with input as {"v": 1, "email": "mallory@elsewhere.org", "groups": ["x"]}
	not d.allow
	count(d.reasons) == 1
}

test_wrong_version_denied if {
	d := onboarding.decision with input as {"v": 2, "email": "alice@example.com", "groups": []}
	not d.allow
	"unsupported input version: send v = 1" in d.reasons
}

package rules

import (
	"strings"
	"testing"
)

const testRules = `
domain: d
descriptors:
  - key: user_id
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: generic_key
    value: tokens
    descriptors:
      - key: user_id
        rate_limit: {unit: minute, requests_per_unit: 1000, algorithm: gcra}
  - key: path
    value: /v1/*
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: free
    rate_limit: {unlimited: true}
`

func mustParse(t *testing.T, text string) *Domain {
	t.Helper()
	d, err := Parse([]byte(text), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLookupFollowsTheReferenceRules(t *testing.T) {
	d := mustParse(t, testRules)
	m := Find(d, []Entry{{"user_id", "u1"}})
	if m == nil || m.Limit.RequestsPerUnit != 10 || m.Limit.Unit != "minute" {
		t.Fatalf("user_id: %+v", m)
	}
	nested := Find(d, []Entry{{"generic_key", "tokens"}, {"user_id", "u1"}})
	if nested == nil || !nested.Limit.GCRA || nested.Path != "generic_key_tokens.user_id" {
		t.Fatalf("nested: %+v", nested)
	}
	if Find(d, []Entry{{"generic_key", "tokens"}}) != nil {
		t.Fatal("a node without a limit matched")
	}
	if Find(d, []Entry{{"generic_key", "other"}, {"user_id", "u1"}}) != nil {
		t.Fatal("an unknown value matched")
	}
	if w := Find(d, []Entry{{"path", "/v1/chat"}}); w == nil || w.Limit.Unit != "second" {
		t.Fatalf("wildcard: %+v", w)
	}
	if Find(d, []Entry{{"path", "/v2/chat"}}) != nil {
		t.Fatal("a wildcard matched outside its prefix")
	}
	if free := Find(d, []Entry{{"free", "x"}}); free == nil || !free.Limit.Unlimited {
		t.Fatalf("unlimited: %+v", free)
	}
}

func TestConfigErrorsAreClear(t *testing.T) {
	cases := []struct{ text, want string }{
		{"descriptors: []", "empty domain"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: fortnight, requests_per_unit: 1}}]", "invalid rate limit unit 'fortnight'"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, unlimited: true}}]", "should not specify"},
		{"domain: d\ndescriptors: [{key: k}, {key: k}]", "duplicate descriptor"},
		{"domain: d\ndescriptors: [{key: k, colour: red}]", "unknown key 'colour'"},
		{"domain: d\ndescriptors: [{value: v}]", "empty key"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1, algorithm: magic}}]", "algorithm"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 1, name: a, replaces: [{name: a}]}}]", "same descriptor"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: -1}}]", "requests_per_unit"},
		{"domain: d\ndescriptors: [{key: k, rate_limit: {unit: hour, requests_per_unit: 0, algorithm: gcra}}]", "gcra"},
		{"domain: [", "not valid YAML"},
		{"- a", "top level"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.text), "f.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Errorf("%q: got %v, want an error naming f.yaml with %q", c.text, err, c.want)
		}
	}
}

func TestDomainsAreUnique(t *testing.T) {
	a := mustParse(t, "domain: a")
	if _, err := Merge([]*Domain{a, a}); err == nil || !strings.Contains(err.Error(), "duplicate domain 'a'") {
		t.Fatalf("got %v", err)
	}
}

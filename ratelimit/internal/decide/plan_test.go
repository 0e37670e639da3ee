package decide

import (
	"strings"
	"testing"

	ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/uplion/uplion/ratelimit/internal/rules"
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
  - key: free
    rate_limit: {unlimited: true}
  - key: client
    descriptors:
      - key: tier
        value: gold
        rate_limit: {unit: day, requests_per_unit: 6, name: gold}
      - key: tier
        rate_limit: {unit: day, requests_per_unit: 3, replaces: [{name: gold}]}
`

func descriptor(tokens uint64, kv ...string) *ratelimitpb.RateLimitDescriptor {
	d := &ratelimitpb.RateLimitDescriptor{}
	for i := 0; i < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitpb.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	if tokens > 0 {
		d.HitsAddend = wrapperspb.UInt64(tokens)
	}
	return d
}

func domain(t *testing.T) *rules.Domain {
	t.Helper()
	d, err := rules.Parse([]byte(testRules), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPlanCountsTokensFromDescriptorHitsAndRecordsTheReservation(t *testing.T) {
	req := &rlspb.RateLimitRequest{Domain: "d", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		descriptor(0, "user_id", "u1"),
		descriptor(250, "generic_key", "tokens", "user_id", "u1"),
		descriptor(0, ReservationKey, "r1"),
		descriptor(0, "free", "x"),
	}}
	p := MakePlan(domain(t), req, 1_800_000_000)
	if p.Reservation != "r1" || len(p.Unlimited) != 1 || !p.Unlimited[3] || len(p.Hits) != 2 {
		t.Fatalf("%+v", p)
	}
	r, tk := p.Hits[0], p.Hits[1]
	if r.Kind != "requests" || r.Hits != 1 || r.Reserve || r.Field != "rpm" || r.Override != "uplion:limits:user:{u1}" {
		t.Errorf("requests hit: %+v", r)
	}
	if tk.Kind != "tokens" || tk.Hits != 250 || !tk.Reserve || !tk.Limit.GCRA || tk.Field != "tpm" {
		t.Errorf("tokens hit: %+v", tk)
	}
	if tk.Key != "uplion:rl:g:d:generic_key_tokens|user_id_{u1}:minute" {
		t.Errorf("gcra key %q", tk.Key)
	}
}

func TestKeysAreWindowAlignedAndOverridesOnlyForIdentities(t *testing.T) {
	l := &rules.Limit{RequestsPerUnit: 10, Unit: "minute"}
	if k := CounterKey("d", []rules.Entry{{Key: "user_id", Value: "u1"}}, l, 1_800_000_059); k != "uplion:rl:d:user_id_{u1}:1800000000" {
		t.Errorf("key %q", k)
	}
	if k, f := OverrideFor([]rules.Entry{{Key: "path", Value: "/v1/x"}}, "requests", l); k != "" || f != "" {
		t.Errorf("override %q %q", k, f)
	}
	if f := LimitField("tokens", "day"); f != "tpd" {
		t.Errorf("field %q", f)
	}
}

func TestRedisKeyNamesAreBoundedWhateverTheDescriptorValues(t *testing.T) {
	huge := strings.Repeat("x", 40_000) // a header value as large as Envoy lets through
	other := huge[:39_999] + "y"
	req := &rlspb.RateLimitRequest{Domain: "d", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		descriptor(0, "user_id", huge),
		descriptor(0, "user_id", other),
		descriptor(7, "generic_key", "tokens", "user_id", huge),
		descriptor(0, ReservationKey, huge),
	}}
	p := MakePlan(domain(t), req, 1_800_000_000)
	if len(p.Hits) != 3 {
		t.Fatalf("%+v", p.Hits)
	}
	for _, h := range p.Hits {
		if len(h.Key) > 200 || len(h.Override) > 200 {
			t.Errorf("unbounded key names: %d and %d bytes", len(h.Key), len(h.Override))
		}
	}
	if p.Hits[0].Key == p.Hits[1].Key || p.Hits[0].Override == p.Hits[1].Override {
		t.Error("different long values must count apart")
	}
	digest := KeyPart(huge)
	if len(digest) != len("sha256:")+64 || p.Hits[0].Key != "uplion:rl:d:user_id_{"+digest+"}:1800000000" {
		t.Errorf("key %q", p.Hits[0].Key)
	}
	if p.Hits[0].Override != LimitsPrefix+"user:{"+digest+"}" {
		t.Errorf("override %q", p.Hits[0].Override)
	}
	if k := ReservationRedisKey(p.Reservation); k != ReservationPrefix+digest {
		t.Errorf("reservation key %q", k)
	}
	// short values (the edge's ids, Envoy's request ids) are kept as they are, so the account
	// limits the accounts service publishes and the reservations the settler reads still match
	id := strings.Repeat("a", MaxKeyPartBytes)
	if KeyPart("u_1") != "u_1" || KeyPart(id) != id || ReservationRedisKey("r1") != "uplion:rl:resv:r1" {
		t.Error("short values must not change")
	}
	if KeyPart(id+"a") == id+"a" {
		t.Error("one byte over the bound must be hashed")
	}
	// a short value cannot pose as a long value's digest
	if KeyPart(digest) == digest {
		t.Error("a value that looks hashed must be hashed again")
	}
}

func TestCounterKeysShareTheirAccountsHashTag(t *testing.T) {
	l := &rules.Limit{RequestsPerUnit: 10, Unit: "minute"}
	for _, c := range []struct {
		entries  []rules.Entry
		key      string
		override string
	}{
		// the last user_id or token_id entry with a value is the tag, wherever it is
		{[]rules.Entry{{Key: "generic_key", Value: "tokens"}, {Key: "user_id", Value: "u1"}},
			"uplion:rl:d:generic_key_tokens|user_id_{u1}:1800000000", "uplion:limits:user:{u1}"},
		{[]rules.Entry{{Key: "user_id", Value: "u1"}, {Key: "token_id", Value: "t1"}},
			"uplion:rl:d:user_id_u1|token_id_{t1}:1800000000", "uplion:limits:token:{t1}"},
		{[]rules.Entry{{Key: "token_id", Value: "t1"}, {Key: "path", Value: "/v1/x"}},
			"uplion:rl:d:token_id_{t1}|path_/v1/x:1800000000", ""},
		{[]rules.Entry{{Key: "user_id", Value: "u1"}, {Key: "token_id", Value: ""}},
			"uplion:rl:d:user_id_{u1}|token_id_:1800000000", ""},
		{[]rules.Entry{{Key: "path", Value: "/v1/x"}}, "uplion:rl:d:path_/v1/x:1800000000", ""},
	} {
		if k := CounterKey("d", c.entries, l, 1_800_000_000); k != c.key {
			t.Errorf("%v: key %q, want %q", c.entries, k, c.key)
		}
		if o, _ := OverrideFor(c.entries, "requests", l); o != c.override {
			t.Errorf("%v: override %q, want %q", c.entries, o, c.override)
		}
	}
	// a client-chosen value with a brace cannot choose a hash tag: it is hashed
	for _, v := range []string{"{u2}", "a{b", "c}"} {
		if KeyPart(v) == v || strings.ContainsAny(KeyPart(v), "{}") {
			t.Errorf("KeyPart(%q) = %q", v, KeyPart(v))
		}
	}
	k := CounterKey("d", []rules.Entry{{Key: "path", Value: "{u1}"}, {Key: "user_id", Value: "x{u1}"}}, l, 0)
	if strings.Count(k, "{") != 1 || !strings.Contains(k, "user_id_{sha256:") {
		t.Errorf("key %q", k)
	}
}

func TestReplacesAndEnvoyLimitOverrides(t *testing.T) {
	over := descriptor(0, "anything", "x")
	over.Limit = &ratelimitpb.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 42, Unit: typepb.RateLimitUnit_HOUR}
	req := &rlspb.RateLimitRequest{Domain: "d", HitsAddend: 3, Descriptors: []*ratelimitpb.RateLimitDescriptor{
		descriptor(0, "client", "c", "tier", "gold"),
		descriptor(0, "client", "c", "tier", "silver"),
		over,
	}}
	p := MakePlan(domain(t), req, 0)
	if len(p.Hits) != 2 || p.Hits[0].Index != 1 || p.Hits[0].Limit.RequestsPerUnit != 3 || p.Hits[0].Hits != 3 {
		t.Fatalf("the gold rule should be replaced: %+v", p.Hits)
	}
	if h := p.Hits[1]; h.Limit.RequestsPerUnit != 42 || h.Limit.Unit != "hour" || h.Rule != "override" {
		t.Fatalf("envoy override: %+v", h)
	}
}

func TestRespondReportsEveryDescriptorAndRefusesInOpenAIShape(t *testing.T) {
	req := &rlspb.RateLimitRequest{Domain: "d", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		descriptor(0, "user_id", "u1"), descriptor(0, "free", "x"), descriptor(0, "nothing", "here"),
	}}
	p := MakePlan(domain(t), req, 0)
	resp := Respond(req, &p, []Outcome{{Over: true, Limit: 10, Remaining: 0, ResetMs: 1500}}, true)
	if resp.OverallCode != rlspb.RateLimitResponse_OVER_LIMIT || len(resp.Statuses) != 3 {
		t.Fatalf("%v", resp)
	}
	s := resp.Statuses[0]
	if s.Code != rlspb.RateLimitResponse_OVER_LIMIT || s.CurrentLimit.RequestsPerUnit != 10 ||
		s.CurrentLimit.Unit != rlspb.RateLimitResponse_RateLimit_MINUTE || s.DurationUntilReset.AsDuration().Milliseconds() != 1500 {
		t.Errorf("status %v", s)
	}
	if resp.Statuses[1].LimitRemaining != UnlimitedRemaining || resp.Statuses[2].Code != rlspb.RateLimitResponse_OK {
		t.Errorf("statuses %v", resp.Statuses)
	}
	if len(resp.RawBody) == 0 {
		t.Error("no 429 body")
	}
	denied := Unavailable(req, true)
	if denied.OverallCode != rlspb.RateLimitResponse_OVER_LIMIT || len(denied.Statuses) != 3 {
		t.Errorf("fail closed: %v", denied)
	}
	if Unavailable(req, false).OverallCode != rlspb.RateLimitResponse_OK {
		t.Error("fail open refused")
	}
}

func TestQuotaHoldsNameEachSubjectOnceAndNeverABracedValue(t *testing.T) {
	req := &rlspb.RateLimitRequest{Descriptors: []*ratelimitpb.RateLimitDescriptor{
		{Entries: []*ratelimitpb.RateLimitDescriptor_Entry{{Key: "generic_key", Value: "requests"}, {Key: "user_id", Value: "u_1"}}},
		{Entries: []*ratelimitpb.RateLimitDescriptor_Entry{{Key: "generic_key", Value: "tokens"}, {Key: "user_id", Value: "u_1"}}},
		{Entries: []*ratelimitpb.RateLimitDescriptor_Entry{{Key: "token_id", Value: "x}{y"}}},
	}}
	long := strings.Repeat("r", MaxKeyPartBytes+1)
	got := QuotaHolds(req, long)
	if len(got) != 1 || got[0].Key != "uplion:quota:held:user:{u_1}" || got[0].Field != KeyPart(long) || got[0].Field == long {
		t.Fatalf("%v", got)
	}
	if QuotaHolds(req, "") != nil {
		t.Fatal("holds without a request id")
	}
}

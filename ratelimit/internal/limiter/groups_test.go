package limiter

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/uplion/uplion/ratelimit/internal/decide"
	"github.com/uplion/uplion/ratelimit/internal/rules"
)

var (
	perMinute  = &rules.Limit{RequestsPerUnit: 10, Unit: "minute"}
	tokensGCRA = &rules.Limit{RequestsPerUnit: 1000, Unit: "minute", GCRA: true}
)

// edgeHits is what the edge's descriptors make: requests and tokens per user and per token, and
// a descriptor that names no account.
func edgeHits() []decide.Hit {
	hit := func(entries []rules.Entry, l *rules.Limit, kind string, n uint64, reserve bool) decide.Hit {
		o, f := decide.OverrideFor(entries, kind, l)
		return decide.Hit{Limit: l, Kind: kind, Key: decide.CounterKey("d", entries, l, 1_800_000_000),
			Hits: n, Override: o, Field: f, Reserve: reserve}
	}
	user := func(v string) []rules.Entry {
		return []rules.Entry{{Key: "generic_key", Value: v}, {Key: "user_id", Value: "u1"}}
	}
	token := func(v string) []rules.Entry {
		return []rules.Entry{{Key: "generic_key", Value: v}, {Key: "token_id", Value: "t1"}}
	}
	return []decide.Hit{
		hit(user("requests"), perMinute, "requests", 1, false),
		hit(token("requests"), perMinute, "requests", 1, false),
		hit(user("tokens"), tokensGCRA, "tokens", 250, true),
		hit(token("tokens"), tokensGCRA, "tokens", 250, true),
		hit([]rules.Entry{{Key: "path", Value: "/v1/x"}}, perMinute, "requests", 1, false),
	}
}

func TestHitsAreGroupedByTheirAccountsHashSlot(t *testing.T) {
	hits := edgeHits()
	groups, err := groupBySlot(hits, slotOf)
	if err != nil {
		t.Fatal(err)
	}
	var idx [][]int
	for _, g := range groups {
		idx = append(idx, g.idx)
	}
	if !reflect.DeepEqual(idx, [][]int{{0, 2}, {1, 3}, {4}}) {
		t.Fatalf("groups %v", idx)
	}
	if groups[0].slot != slotOf("u1") || groups[1].slot != slotOf("t1") || slotOf(hits[0].Override) != slotOf("u1") {
		t.Errorf("slots %+v", groups)
	}
	// an account-limits key outside its counter's slot is a bug, not a CROSSSLOT answer from Redis
	hits[2].Override = "uplion:limits:user:u1"
	if _, err := groupBySlot(hits, slotOf); err == nil || !strings.Contains(err.Error(), "different hash slots") {
		t.Errorf("mismatch: %v", err)
	}
}

func TestDecideCallStandaloneIsOneScriptAndClusterNamesNoEmptyKey(t *testing.T) {
	hits := edgeHits()[2:5] // user tokens (reserved, account limits), token tokens, a path
	keys, args := decideCall(hits, 1_800_000_000_123, "uplion:rl:resv:r1", 60_000, false)
	wantKeys := []string{hits[0].Key, hits[1].Key, hits[2].Key,
		"uplion:limits:user:{u1}", "uplion:limits:token:{t1}", "", "uplion:rl:resv:r1"}
	wantArgs := []string{"1800000000123", "3", "60000",
		"1000", "60000", "g", "250", "0", "tpm", "1",
		"1000", "60000", "g", "250", "0", "tpm", "1",
		"10", "60000", "f", "1", "0", "", "0"}
	if !reflect.DeepEqual(keys, wantKeys) || !reflect.DeepEqual(args, wantArgs) {
		t.Fatalf("standalone:\n%q\n%q", keys, args)
	}
	keys, args = decideCall(hits[2:], 1_800_000_000_123, "", 0, true)
	if !reflect.DeepEqual(keys, []string{hits[2].Key, hits[2].Key}) ||
		!reflect.DeepEqual(args, []string{"1800000000123", "1", "0", "10", "60000", "f", "1", "0", "", "0"}) {
		t.Fatalf("cluster, no account: %q %q", keys, args)
	}
	keys, args = decideCall(hits[:1], 1, "", 60_000, true)
	if !reflect.DeepEqual(keys, []string{hits[0].Key, "uplion:limits:user:{u1}"}) ||
		!reflect.DeepEqual(args, []string{"1", "1", "0", "1000", "60000", "g", "250", "0", "tpm", "0"}) {
		t.Fatalf("cluster, reserved: %q %q (the reservation is written after every slot allowed)", keys, args)
	}
}

func TestMergePutsOutcomesBackInHitOrder(t *testing.T) {
	groups := []group{{idx: []int{0, 2}}, {idx: []int{1}}}
	o := func(remaining uint64) decide.Outcome { return decide.Outcome{Limit: 10, Remaining: remaining} }
	results := []groupResult{
		{outcomes: []decide.Outcome{o(7), o(9)}},
		{rejected: true, outcomes: []decide.Outcome{{Over: true, Limit: 10, ResetMs: 5}}},
	}
	rejected, outcomes, err := merge(3, groups, results)
	if err != nil || !rejected || !reflect.DeepEqual(outcomes, []decide.Outcome{o(7), {Over: true, Limit: 10, ResetMs: 5}, o(9)}) {
		t.Fatalf("%v %v %v", rejected, outcomes, err)
	}
	if !results[0].counted() || results[1].counted() {
		t.Error("only the group that allowed counted its hits")
	}
	results[1] = groupResult{err: errors.New("i/o timeout")}
	if rejected, _, err = merge(3, groups, results); rejected || err == nil || results[1].counted() {
		t.Errorf("a failed group: %v %v", rejected, err)
	}
	results[1] = groupResult{outcomes: []decide.Outcome{o(1)}}
	if rejected, _, err = merge(3, groups, results); rejected || err != nil {
		t.Errorf("all allowed: %v %v", rejected, err)
	}
}

func TestUndoAndReservationArguments(t *testing.T) {
	hits := edgeHits()
	hits[1].Hits = 0 // counts nothing
	outcomes := make([]decide.Outcome, len(hits))
	for i := range outcomes {
		outcomes[i] = decide.Outcome{Limit: hits[i].Limit.RequestsPerUnit}
	}
	outcomes[2].Limit = 600       // the user's own tokens per minute
	outcomes[3].Limit = unlimited // the token's: "no limit", neither read nor counted
	keys, args := undoCall(hits, group{idx: []int{0, 2}}, []decide.Outcome{outcomes[0], outcomes[2]})
	if !reflect.DeepEqual(keys, []string{hits[0].Key, hits[2].Key}) ||
		!reflect.DeepEqual(args, []string{"f", "1", "60000", "10", "g", "250", "60000", "600"}) {
		t.Fatalf("undo %q %q", keys, args)
	}
	if keys, _ := undoCall(hits, group{idx: []int{1, 3}}, []decide.Outcome{outcomes[1], outcomes[3]}); keys != nil {
		t.Errorf("nothing was counted: %q", keys)
	}
	args = reserveCall(hits, outcomes, 60_000)
	if !reflect.DeepEqual(args, []string{"60000", hits[2].Key, "250", "g", "60000", "600"}) {
		t.Fatalf("reservation %q", args)
	}
	hits[2].Reserve = false
	if args := reserveCall(hits, outcomes, 60_000); args != nil {
		t.Errorf("nothing reserved: %q", args)
	}
}

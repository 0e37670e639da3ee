package limiter

import (
	"fmt"
	"strconv"

	"github.com/uplion/uplion/ratelimit/internal/decide"
)

// The pure half of cluster mode: which hits go to which hash slot's script, what each script is
// given, how their answers combine, and what an undo or a reservation write is given. No I/O.

// unlimited is the limit meaning "no limit unless the account sets one": decide.lua neither reads
// nor counts such hits.
const unlimited = 4294967295

// group is the hits (their positions in the request's hits) whose counter keys are in one hash slot.
type group struct {
	slot uint16
	idx  []int
}

// groupBySlot groups hits by the hash slot of their counter key, in order of first appearance.
// A hit's account-limits hash shares its counter's slot by construction (the same hash tag, see
// decide.OverrideFor); when it does not, that is a bug, reported as an error rather than sent to
// Redis (which would refuse the script with CROSSSLOT).
func groupBySlot(hits []decide.Hit, slot func(string) uint16) ([]group, error) {
	var groups []group
	at := map[uint16]int{}
	for i := range hits {
		h := &hits[i]
		s := slot(h.Key)
		if h.Override != "" {
			if o := slot(h.Override); o != s {
				return nil, fmt.Errorf("account limits %q (hash slot %d) and counter %q (hash slot %d) are in different hash slots", h.Override, o, h.Key, s)
			}
		}
		g, ok := at[s]
		if !ok {
			g = len(groups)
			at[s] = g
			groups = append(groups, group{slot: s})
		}
		groups[g].idx = append(groups[g].idx, i)
	}
	return groups, nil
}

func algorithm(h *decide.Hit) string {
	if h.Limit.GCRA {
		return "g"
	}
	return "f"
}

// decideCall is decide.lua's keys and arguments for hits. Standalone (cluster false): every
// counter, every override key ("" when none) and the reservation key ("" when none). Cluster: no
// key may be "" (a key of slot 0), so a hit without account limits names its own counter as the
// override placeholder (its field is "", so the script does not read it), the reservation key is
// left out and nothing is reserved (reserveCall writes the reservation after every slot allowed).
func decideCall(hits []decide.Hit, nowMs int64, reservation string, ttlMs int64, cluster bool) ([]string, []string) {
	n := len(hits)
	keys := make([]string, 0, 2*n+1)
	for i := range hits {
		keys = append(keys, hits[i].Key)
	}
	for i := range hits {
		o := hits[i].Override
		if cluster && o == "" {
			o = hits[i].Key
		}
		keys = append(keys, o)
	}
	if cluster {
		ttlMs = 0
	} else {
		keys = append(keys, reservation)
	}
	args := make([]string, 0, 3+7*n)
	args = append(args, strconv.FormatInt(nowMs, 10), strconv.Itoa(n), strconv.FormatInt(ttlMs, 10))
	for i := range hits {
		h := &hits[i]
		shadow, reserve := "0", "0"
		if h.Shadow {
			shadow = "1"
		}
		if h.Reserve && !cluster {
			reserve = "1"
		}
		field := h.Field
		if cluster && h.Override == "" {
			field = "" // the placeholder is the counter: never read it as a hash
		}
		args = append(args, strconv.FormatUint(h.Limit.RequestsPerUnit, 10),
			strconv.FormatInt(h.Limit.WindowS()*1000, 10), algorithm(h), strconv.FormatUint(h.Hits, 10), shadow, field, reserve)
	}
	return keys, args
}

// parseDecideReply reads decide.lua's answer for n hits: {rejected, then per hit: over, limit,
// remaining, reset_ms}.
func parseDecideReply(reply []int64, n int) (bool, []decide.Outcome, error) {
	if len(reply) != 1+4*n {
		return false, nil, fmt.Errorf("unexpected reply of %d values for %d hits", len(reply), n)
	}
	outcomes := make([]decide.Outcome, n)
	for i := range outcomes {
		r := reply[1+4*i:]
		outcomes[i] = decide.Outcome{Over: r[0] != 0, Limit: uint64(max(r[1], 0)), Remaining: uint64(max(r[2], 0)), ResetMs: r[3]}
	}
	return reply[0] != 0, outcomes, nil
}

// groupResult is what one slot's decide script answered.
type groupResult struct {
	rejected bool
	outcomes []decide.Outcome // in the group's order
	err      error
}

// counted reports whether a group's script counted its hits: it answered and allowed them.
func (r *groupResult) counted() bool { return r.err == nil && !r.rejected }

// merge combines the groups' answers into the request's: rejected when any group rejected, the
// outcomes in the original hit order, and the first group error (nil when every group answered).
// Outcomes of hits whose group failed are zero.
func merge(n int, groups []group, results []groupResult) (bool, []decide.Outcome, error) {
	outcomes := make([]decide.Outcome, n)
	rejected := false
	var err error
	for g := range groups {
		r := &results[g]
		if r.err != nil {
			if err == nil {
				err = r.err
			}
			continue
		}
		rejected = rejected || r.rejected
		for j, i := range groups[g].idx {
			outcomes[i] = r.outcomes[j]
		}
	}
	return rejected, outcomes, err
}

// countedHit reports whether decide.lua counted a hit it allowed: hits with the unlimited limit
// (after the account's override) are neither read nor counted.
func countedHit(h *decide.Hit, o decide.Outcome) bool {
	return h.Hits > 0 && o.Limit < unlimited
}

// undoCall is undo.lua's keys and arguments for one group that counted its hits; no keys when
// nothing was counted.
func undoCall(hits []decide.Hit, g group, outcomes []decide.Outcome) ([]string, []string) {
	var keys, args []string
	for j, i := range g.idx {
		h, o := &hits[i], outcomes[j]
		if !countedHit(h, o) {
			continue
		}
		keys = append(keys, h.Key)
		args = append(args, algorithm(h), strconv.FormatUint(h.Hits, 10),
			strconv.FormatInt(h.Limit.WindowS()*1000, 10), strconv.FormatUint(o.Limit, 10))
	}
	return keys, args
}

// reserveCall is reserve.lua's arguments (its only key is the reservation) for an allowed
// request: the reserved hits that were counted, as decide.lua records them; nil when there are none.
func reserveCall(hits []decide.Hit, outcomes []decide.Outcome, ttlMs int64) []string {
	var args []string
	for i := range hits {
		h, o := &hits[i], outcomes[i]
		if !h.Reserve || !countedHit(h, o) {
			continue
		}
		if args == nil {
			args = append(args, strconv.FormatInt(ttlMs, 10))
		}
		args = append(args, h.Key, strconv.FormatUint(h.Hits, 10), algorithm(h),
			strconv.FormatInt(h.Limit.WindowS()*1000, 10), strconv.FormatUint(o.Limit, 10))
	}
	return args
}

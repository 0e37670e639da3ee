// Package rules reads rate-limit rules in envoyproxy/ratelimit's YAML format and finds a
// descriptor's rule. Parsing and lookup are pure.
//
// The format and the lookup follow the reference service: a domain holds nested descriptors (key,
// optional value, possibly a "prefix*" wildcard value), each optionally with
// rate_limit {unit, requests_per_unit | unlimited, name, replaces} and shadow_mode; unknown keys
// are errors. uplion adds two keys, documented in docs/ratelimit.md: algorithm in a rate_limit
// (fixed_window, the default, or gcra) and failure_mode_deny at the domain level (refuse instead of
// allow when Redis cannot answer).
package rules

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Units maps a unit name to its window in seconds.
var Units = map[string]int64{
	"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
	"year": 365 * 86400,
}

// MaxLimit is the largest requests_per_unit; as an account-free default it means "no limit".
const MaxLimit = 1<<32 - 1

var (
	rootKeys       = set("domain", "descriptors", "failure_mode_deny")
	descriptorKeys = set("key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode",
		"detailed_metric", "value_to_metric", "share_threshold")
	limitKeys = set("unit", "requests_per_unit", "unlimited", "name", "replaces", "algorithm")
)

func set(keys ...string) map[string]bool {
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		out[k] = true
	}
	return out
}

// Error is an invalid configuration; its message names the file and the problem.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, args ...any) error { return &Error{fmt.Sprintf(format, args...)} }

// Limit is one rule's rate limit.
type Limit struct {
	RequestsPerUnit uint64
	Unit            string // a key of Units; "" when unlimited
	Unlimited       bool
	Name            string
	Replaces        []string
	GCRA            bool // the algorithm: GCRA, else epoch-aligned fixed windows
}

// WindowS is the limit's window in seconds.
func (l *Limit) WindowS() int64 { return Units[l.Unit] }

// Node is a descriptor in the rule tree.
type Node struct {
	Path       string // the rule's id in metrics: "generic_key_requests.user_id"
	Limit      *Limit
	ShadowMode bool
	Children   map[string]*Node
	Wildcards  []string // children keys ending in "*", in file order
}

// Domain is one configuration file's rules.
type Domain struct {
	Name            string
	Root            *Node
	FailureModeDeny bool
}

func checkKeys(where string, data map[string]any, allowed map[string]bool) error {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !allowed[k] {
			return errorf("%s: unknown key '%s'", where, k)
		}
	}
	return nil
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func truthy(v any) bool {
	b, ok := v.(bool)
	return ok && b
}

func parseLimit(where string, raw any) (*Limit, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, errorf("%s: rate_limit must be a mapping", where)
	}
	if err := checkKeys(where, m, limitKeys); err != nil {
		return nil, err
	}
	unit := strings.ToLower(str(m["unit"]))
	_, known := Units[unit]
	unlimited := truthy(m["unlimited"])
	if unlimited && known {
		return nil, errorf("%s: should not specify rate limit unit when unlimited", where)
	}
	if !unlimited && !known {
		return nil, errorf("%s: invalid rate limit unit '%s'", where, str(m["unit"]))
	}
	var rpu uint64
	switch v := m["requests_per_unit"].(type) {
	case nil:
	case int:
		if v < 0 || uint64(v) > MaxLimit {
			return nil, errorf("%s: requests_per_unit must be an integer from 0 to 4294967295", where)
		}
		rpu = uint64(v)
	default:
		return nil, errorf("%s: requests_per_unit must be an integer from 0 to 4294967295", where)
	}
	l := &Limit{RequestsPerUnit: rpu, Unit: unit, Unlimited: unlimited, Name: str(m["name"])}
	if unlimited {
		l.Unit = ""
	}
	replaces, _ := m["replaces"].([]any)
	for _, r := range replaces {
		rm, _ := r.(map[string]any)
		target := str(rm["name"])
		if target == "" {
			return nil, errorf("%s: should not have an empty replaces entry", where)
		}
		if target == l.Name {
			return nil, errorf("%s: replaces should not contain name of same descriptor", where)
		}
		l.Replaces = append(l.Replaces, target)
	}
	switch algorithm := str(m["algorithm"]); algorithm {
	case "", "fixed_window":
	case "gcra":
		l.GCRA = true
		if rpu == 0 && !unlimited {
			return nil, errorf("%s: a gcra rule needs requests_per_unit > 0", where)
		}
	default:
		return nil, errorf("%s: algorithm must be one of fixed_window, gcra", where)
	}
	return l, nil
}

func load(file string, parent *Node, descriptors any) error {
	if descriptors == nil {
		return nil
	}
	list, ok := descriptors.([]any)
	if !ok {
		return errorf("%s: descriptors must be a list", file)
	}
	for _, raw := range list {
		d, ok := raw.(map[string]any)
		if !ok {
			return errorf("%s: each descriptor must be a mapping", file)
		}
		if err := checkKeys(file, d, descriptorKeys); err != nil {
			return err
		}
		key := str(d["key"])
		if key == "" {
			return errorf("%s: descriptor has empty key", file)
		}
		final := key
		if v := str(d["value"]); v != "" {
			final = key + "_" + v
		}
		path := final
		if parent.Path != "" {
			path = parent.Path + "." + final
		}
		if _, dup := parent.Children[final]; dup {
			return errorf("%s: duplicate descriptor composite key '%s'", file, path)
		}
		node := &Node{Path: path, ShadowMode: truthy(d["shadow_mode"]), Children: map[string]*Node{}}
		if d["rate_limit"] != nil {
			l, err := parseLimit(file+": "+path, d["rate_limit"])
			if err != nil {
				return err
			}
			node.Limit = l
		}
		if strings.HasSuffix(final, "*") {
			parent.Wildcards = append(parent.Wildcards, final)
		}
		if err := load(file, node, d["descriptors"]); err != nil {
			return err
		}
		parent.Children[final] = node
	}
	return nil
}

// Parse reads one configuration file (one domain).
func Parse(text []byte, file string) (*Domain, error) {
	var raw any
	if err := yaml.Unmarshal(text, &raw); err != nil {
		return nil, errorf("%s: not valid YAML: %v", file, err)
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, errorf("%s: the top level must be a mapping with a domain", file)
	}
	if err := checkKeys(file, m, rootKeys); err != nil {
		return nil, err
	}
	if str(m["domain"]) == "" {
		return nil, errorf("%s: config file cannot have empty domain", file)
	}
	root := &Node{Children: map[string]*Node{}}
	if err := load(file, root, m["descriptors"]); err != nil {
		return nil, err
	}
	return &Domain{Name: str(m["domain"]), Root: root, FailureModeDeny: truthy(m["failure_mode_deny"])}, nil
}

// Merge indexes domains by name; a name may appear once.
func Merge(domains []*Domain) (map[string]*Domain, error) {
	out := make(map[string]*Domain, len(domains))
	for _, d := range domains {
		if _, dup := out[d.Name]; dup {
			return nil, errorf("duplicate domain '%s' in config files", d.Name)
		}
		out[d.Name] = d
	}
	return out, nil
}

// Entry is one key/value of a descriptor.
type Entry struct{ Key, Value string }

// Find returns the node of a descriptor's rule, or nil: walk the tree by key_value, then a
// wildcard, then key; a limit applies only if the descriptor's last entry reaches a node that has one.
func Find(d *Domain, entries []Entry) *Node {
	node := d.Root
	for i, e := range entries {
		kv := e.Key + "_" + e.Value
		next := node.Children[kv]
		if next == nil {
			for _, w := range node.Wildcards {
				if strings.HasPrefix(kv, w[:len(w)-1]) {
					next = node.Children[w]
					break
				}
			}
		}
		if next == nil {
			next = node.Children[e.Key]
		}
		if next == nil {
			return nil
		}
		if i == len(entries)-1 {
			if next.Limit == nil {
				return nil
			}
			return next
		}
		if len(next.Children) == 0 {
			return nil
		}
		node = next
	}
	return nil
}

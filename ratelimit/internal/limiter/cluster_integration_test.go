//go:build clustertest

// Against a real Redis Cluster: go test -tags clustertest -run TestCluster ./internal/limiter with
// UPLION_TEST_REDIS_CLUSTER_URL=redis://host:port/0 (any node). It starts nothing; without the
// variable it fails (never a silent skip). tests/ starts a cluster and runs it.
package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	ratelimitpb "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlspb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/mediocregopher/radix/v4"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/uplion/uplion/ratelimit/internal/config"
	"github.com/uplion/uplion/ratelimit/internal/decide"
	"github.com/uplion/uplion/ratelimit/internal/rules"
)

const clusterRules = `
domain: d
descriptors:
  - key: generic_key
    value: requests
    descriptors:
      - key: user_id
        rate_limit: {unit: minute, requests_per_unit: 20}
      - key: token_id
        rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: generic_key
    value: tokens
    descriptors:
      - key: user_id
        rate_limit: {unit: minute, requests_per_unit: 1000000, algorithm: gcra}
      - key: token_id
        rate_limit: {unit: minute, requests_per_unit: 1000000, algorithm: gcra}
`

type clusterEnv struct {
	t      *testing.T
	domain *rules.Domain
	limits []*Limiter
	redis  *radix.Cluster
}

func newClusterEnv(t *testing.T, processes int) *clusterEnv {
	url := os.Getenv("UPLION_TEST_REDIS_CLUSTER_URL")
	if url == "" {
		t.Fatal("UPLION_TEST_REDIS_CLUSTER_URL (a Redis Cluster node, redis://host:port/0) is required with -tags clustertest")
	}
	a, err := config.ParseRedisURL(url)
	if err != nil {
		t.Fatal(err)
	}
	d, err := rules.Parse([]byte(clusterRules), "cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := &clusterEnv{t: t, domain: d}
	for range processes { // each its own cluster client, as separate replicas have
		l, err := NewCluster(ctx, a.Addr, a.User, a.Password, nil, 2*time.Second, 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		e.limits = append(e.limits, l)
	}
	if e.redis, err = (radix.ClusterConfig{PoolConfig: radix.PoolConfig{Dialer: radix.Dialer{AuthUser: a.User, AuthPass: a.Password}}}).New(ctx, []string{a.Addr}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.redis.Close() })
	return e
}

func randomID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// request is what the edge sends: requests and tokens for a user and a token, and the request id.
func request(user, token, requestID string, tokens uint64) *rlspb.RateLimitRequest {
	d := func(addend uint64, kv ...string) *ratelimitpb.RateLimitDescriptor {
		out := &ratelimitpb.RateLimitDescriptor{}
		for i := 0; i < len(kv); i += 2 {
			out.Entries = append(out.Entries, &ratelimitpb.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		if addend > 0 {
			out.HitsAddend = wrapperspb.UInt64(addend)
		}
		return out
	}
	return &rlspb.RateLimitRequest{Domain: "d", Descriptors: []*ratelimitpb.RateLimitDescriptor{
		d(0, "generic_key", "requests", "user_id", user),
		d(0, "generic_key", "requests", "token_id", token),
		d(tokens, "generic_key", "tokens", "user_id", user),
		d(tokens, "generic_key", "tokens", "token_id", token),
		d(0, decide.ReservationKey, requestID),
	}}
}

func (e *clusterEnv) decide(l *Limiter, req *rlspb.RateLimitRequest) (decide.Plan, bool, []decide.Outcome) {
	now := time.Now()
	p := decide.MakePlan(e.domain, req, now.Unix())
	resv := ""
	if p.Reservation != "" {
		resv = decide.ReservationRedisKey(p.Reservation)
	}
	rejected, outcomes, err := l.Decide(context.Background(), p.Hits, now.UnixMilli(), resv, 60_000)
	if err != nil {
		e.t.Fatal(err)
	}
	return p, rejected, outcomes
}

func (e *clusterEnv) get(key string) string {
	var v string
	if err := e.redis.Do(context.Background(), radix.Cmd(&v, "GET", key)); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func TestClusterAdmitsExactlyTheLimitAcrossReplicas(t *testing.T) {
	e := newClusterEnv(t, 2)
	user, token := randomID("u"), randomID("t")
	for slotOf(user) == slotOf(token) { // two slots, so that refusals are undone
		token = randomID("t")
	}
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, rejected, _ := e.decide(e.limits[i%2], request(user, token, randomID("r"), 10))
			if !rejected {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != 20 {
		t.Fatalf("allowed %d of 30 against 20 per minute", allowed)
	}
	// refused requests were taken back from the token's counters: exactly the allowed ones remain
	p, _, _ := e.decide(e.limits[0], request(user, token, "", 0))
	if v := e.get(p.Hits[1].Key); v != "20" {
		t.Errorf("token requests counter %q, want 20", v)
	}
}

func TestClusterUndoesTheSlotsThatAllowedARefusedRequest(t *testing.T) {
	e := newClusterEnv(t, 1)
	user, token := randomID("u"), randomID("t")
	l := e.limits[0]
	// 100,000 tokens against 1,000,000 a minute (GCRA): each request moves the user's theoretical
	// arrival time 6 s ahead, so it is still ahead of the clock when the refusal is undone (a time
	// behind the clock means the same as the clock, and would not read back the same)
	for range 3 {
		if _, rejected, _ := e.decide(l, request(user, token, randomID("r"), 100_000)); rejected {
			t.Fatal("refused under the limit")
		}
	}
	p, _, _ := e.decide(l, request(user, token, "", 0)) // a fourth request (no token counts), for the key names
	userRequests, userTokens := p.Hits[0].Key, p.Hits[2].Key
	before, tatBefore := e.get(userRequests), e.get(userTokens)
	if before != "4" {
		t.Fatalf("user requests %q", before)
	}
	// the token's own limit: 4 requests per minute, used up; the user's slot allows
	tokenLimits := "uplion:limits:token:{" + token + "}"
	if err := e.redis.Do(context.Background(), radix.Cmd(nil, "HSET", tokenLimits, "rpm", "4")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.redis.Do(context.Background(), radix.Cmd(nil, "DEL", tokenLimits)) })
	p, rejected, outcomes := e.decide(l, request(user, token, randomID("r"), 100_000))
	if !rejected || !outcomes[1].Over || outcomes[1].Limit != 4 || outcomes[0].Over || outcomes[0].Remaining != 15 {
		t.Fatalf("rejected %v, outcomes %+v", rejected, outcomes)
	}
	if v := e.get(userRequests); v != before {
		t.Errorf("user requests counter %q after the refusal, want %q (undone)", v, before)
	}
	if v := e.get(userTokens); v != tatBefore {
		t.Errorf("user tokens (GCRA) %q after the refusal, want %q (undone)", v, tatBefore)
	}
	var ttl int64
	if err := e.redis.Do(context.Background(), radix.Cmd(&ttl, "PTTL", userRequests)); err != nil || ttl <= 0 {
		t.Errorf("the undo kept no TTL: %d %v", ttl, err)
	}
	if n := p.Reservation; n == "" {
		t.Fatal("no request id")
	}
	var exists int
	if err := e.redis.Do(context.Background(), radix.Cmd(&exists, "EXISTS", decide.ReservationRedisKey(p.Reservation))); err != nil || exists != 0 {
		t.Errorf("a refused request reserved: %d %v", exists, err)
	}
}

func TestClusterWritesTheReservationOfAnAllowedRequest(t *testing.T) {
	e := newClusterEnv(t, 1)
	user, token, id := randomID("u"), randomID("t"), randomID("r")
	userLimits := "uplion:limits:user:{" + user + "}"
	if err := e.redis.Do(context.Background(), radix.Cmd(nil, "HSET", userLimits, "tpm", "7")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.redis.Do(context.Background(), radix.Cmd(nil, "DEL", userLimits)) })
	p, rejected, _ := e.decide(e.limits[0], request(user, token, id, 3))
	if rejected {
		t.Fatal("refused")
	}
	var resv map[string]string
	key := decide.ReservationRedisKey(id)
	if err := e.redis.Do(context.Background(), radix.Cmd(&resv, "HGETALL", key)); err != nil {
		t.Fatal(err)
	}
	// decide.lua's format: hits:algorithm:interval (GCRA: window_ms / the limit in force)
	want := map[string]string{p.Hits[2].Key: "3:g:" + strconv.FormatFloat(60000.0/7, 'f', 10, 64), p.Hits[3].Key: "3:g:0.06"}
	if len(resv) != 2 || resv[p.Hits[3].Key] != want[p.Hits[3].Key] || resv[p.Hits[2].Key][:14] != want[p.Hits[2].Key][:14] {
		t.Fatalf("reservation %v, want %v", resv, want)
	}
	var ttl int64
	if err := e.redis.Do(context.Background(), radix.Cmd(&ttl, "PTTL", key)); err != nil || ttl <= 0 || ttl > 60_000 {
		t.Errorf("reservation TTL %d %v", ttl, err)
	}
	if err := e.limits[0].ping(context.Background(), new(radix.Conn), time.Second); err != nil {
		t.Errorf("probe: %v", err)
	}
}

package limiter

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mediocregopher/radix/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplion/uplion/ratelimit/internal/decide"
)

// Cluster mode. Redis Cluster refuses a script whose keys are in different hash slots, so a
// decision runs decide.lua once per hash slot of its counters (concurrently): all of a user's
// counters and account limits share the user id's hash tag, all of a token's the token id's, so an
// edge request is two script runs. Each run checks and counts its hits atomically, so no limit is
// ever exceeded; when one run refuses (or fails), the hits the others counted are taken back
// (undo.lua, one run per slot). Until then a concurrent request may see them: the price of not
// having one atomic script. A request's reservation is written (reserve.lua) once every run
// allowed it.

var (
	//go:embed undo.lua
	undoLua    string
	undoScript = radix.NewEvalScript(undoLua)
	//go:embed reserve.lua
	reserveLua    string
	reserveScript = radix.NewEvalScript(reserveLua)
)

var (
	clusterUndos = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "uplion_ratelimit_cluster_undos_total",
		Help: "Cluster mode: hash slots whose counted hits were taken back because another slot refused or failed the request, by result",
	}, []string{"result"})
	clusterReservationFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "uplion_ratelimit_cluster_reservation_failures_total",
		Help: "Cluster mode: allowed requests whose token reservation could not be written (their tokens stay counted until the window ends)",
	})
)

// Register adds the limiter's metrics to a registry.
func Register(r prometheus.Registerer) {
	r.MustRegister(clusterUndos, clusterReservationFailures)
	for _, result := range []string{"ok", "error"} {
		clusterUndos.WithLabelValues(result)
	}
}

// NewCluster connects to the Redis Cluster that seed (host:port) belongs to: a pool of conns
// pipelined connections to every node, authenticated with user and password when given (radix
// reads neither from the addresses the cluster reports), over TLS when tlsCfg is set (a node the
// cluster announces by address is checked against the seed's host name). The topology is
// refreshed every second and on MOVED/ASK answers.
func NewCluster(ctx context.Context, seed, user, password string, tlsCfg *tls.Config, timeout time.Duration, conns int) (*Limiter, error) {
	dialer := &netDialer{timeout: timeout, tls: tlsCfg}
	if host, _, err := net.SplitHostPort(seed); err == nil && net.ParseIP(host) == nil {
		dialer.ipName = host
	}
	cfg := radix.ClusterConfig{
		PoolConfig: radix.PoolConfig{
			Size:   conns,
			Dialer: radix.Dialer{NetDialer: dialer, AuthUser: user, AuthPass: password},
		},
		SyncEvery: time.Second,
		// CLUSTERDOWN (a master lost, before failover) fails a decision at once rather than after
		// radix's default 100 ms delay, which is longer than the decision bound anyway
		OnDownDelayActionsBy: -1,
	}
	cluster, err := cfg.New(ctx, []string{seed})
	if err != nil {
		return nil, fmt.Errorf("connecting to redis cluster via %s: %w", seed, err)
	}
	return &Limiter{client: cluster, cluster: cluster, url: seed, dialer: dialer, timeout: timeout}, nil
}

// pingCluster PINGs every primary through the cluster client: an error only when none answers
// within ctx.
// A single master down fails only its slots' decisions (each one within the bound), so it does
// not open the circuit for everybody.
func (l *Limiter) pingCluster(ctx context.Context) error {
	clients, err := l.cluster.Clients()
	if err != nil {
		return err
	}
	if len(clients) == 0 {
		return errors.New("no redis cluster primaries known")
	}
	errs := make(chan error, len(clients))
	for _, rs := range clients {
		go func(c radix.Client) { errs <- c.Do(ctx, radix.Cmd(nil, "PING")) }(rs.Primary)
	}
	var last error
	for range clients {
		select {
		case err := <-errs:
			if err == nil {
				return nil
			}
			last = err
		case <-ctx.Done():
			return fmt.Errorf("no redis cluster primary answered PING: %w", ctx.Err())
		}
	}
	return fmt.Errorf("no redis cluster primary answered PING: %w", last)
}

// doBounded is client.Do, returning when ctx ends even if radix has not (see replyBound: a
// master that accepts connections and never answers would otherwise hold the decision, and the
// ones after it, until its connection is closed). The call goes on in the background until then.
func doBounded(ctx context.Context, client redisClient, a radix.Action) error {
	done := make(chan error, 1)
	go func() { done <- client.Do(ctx, a) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func slotOf(key string) uint16 { return radix.ClusterSlot([]byte(key)) }

// clusterLog lets one line a second through (undo and reservation failures are counted too).
var clusterLog atomic.Int64

func logCluster(msg string, err error) {
	now, last := time.Now().Unix(), clusterLog.Load()
	if now > last && clusterLog.CompareAndSwap(last, now) {
		slog.Warn(msg, "error", err.Error())
	}
}

// bounded is a context of its own bound for the steps after the decision's scripts (undo,
// reservation): they run even when the decision's context has run out, and wait at most the bound.
func (l *Limiter) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
}

func (l *Limiter) decideCluster(ctx context.Context, hits []decide.Hit, nowMs int64, reservation string, ttlMs int64) (bool, []decide.Outcome, error) {
	groups, err := groupBySlot(hits, slotOf)
	if err != nil {
		return false, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	subs := make([][]decide.Hit, len(groups))
	for g := range groups {
		subs[g] = make([]decide.Hit, len(groups[g].idx))
		for j, i := range groups[g].idx {
			subs[g][j] = hits[i]
		}
	}
	results := make([]groupResult, len(groups))
	dctx, cancel := context.WithTimeout(ctx, l.timeout)
	run := func(g int) {
		keys, args := decideCall(subs[g], nowMs, "", 0, true)
		var reply []int64
		r := &results[g]
		if r.err = doBounded(dctx, l.client, decideScript.Cmd(&reply, keys, args...)); r.err == nil {
			r.rejected, r.outcomes, r.err = parseDecideReply(reply, len(subs[g]))
		}
	}
	if len(groups) == 1 {
		run(0)
	} else {
		var wg sync.WaitGroup
		for g := range groups {
			wg.Add(1)
			go func() { defer wg.Done(); run(g) }()
		}
		wg.Wait()
	}
	cancel()
	rejected, outcomes, err := merge(len(hits), groups, results)
	if rejected || err != nil {
		l.undo(ctx, hits, groups, results)
		if err != nil {
			return false, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return true, outcomes, nil
	}
	if reservation != "" {
		if args := reserveCall(hits, outcomes, ttlMs); args != nil {
			rctx, cancel := l.bounded(ctx)
			err := doBounded(rctx, l.client, reserveScript.Cmd(nil, []string{reservation}, args...))
			cancel()
			if err != nil {
				clusterReservationFailures.Inc()
				logCluster("redis cluster: reservation not written; its tokens stay counted until the window ends", err)
			}
		}
	}
	return false, outcomes, nil
}

// undo takes back the hits of every group that counted them, concurrently, each within the bound.
func (l *Limiter) undo(ctx context.Context, hits []decide.Hit, groups []group, results []groupResult) {
	ctx, cancel := l.bounded(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for g := range groups {
		if !results[g].counted() {
			continue
		}
		keys, args := undoCall(hits, groups[g], results[g].outcomes)
		if len(keys) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := doBounded(ctx, l.client, undoScript.Cmd(nil, keys, args...)); err != nil {
				clusterUndos.WithLabelValues("error").Inc()
				logCluster("redis cluster: hits of a refused request not taken back; they stay counted until the window ends", err)
				return
			}
			clusterUndos.WithLabelValues("ok").Inc()
		}()
	}
	wg.Wait()
}

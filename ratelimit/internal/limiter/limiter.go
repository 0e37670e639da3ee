// Package limiter counts hits in Redis: every decision is one Lua script run (one round trip) that
// checks all of a request's limits and counts the hits only if the request is allowed.
//
// In cluster mode (NewCluster) a decision is one script run per hash slot of its counters instead
// (cluster.go).
//
// Every decision waits for Redis at most the configured bound, then fails (the caller applies the
// domain's fail mode). A probe on its own connection PINGs Redis every 25 ms, each PING bounded the
// same way; two failures in a row open the circuit: decisions then fail at once, without touching
// Redis, until a PING succeeds. A Redis that is only slow (queued behind a burst) keeps the
// circuit closed as long as it answers within the bound.
package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mediocregopher/radix/v4"

	"github.com/uplion/uplion/ratelimit/internal/decide"
)

//go:embed decide.lua
var decideLua string

var decideScript = radix.NewEvalScript(decideLua)

// ErrUnavailable: Redis is down (the probe says so), failed, or did not answer within the bound.
var ErrUnavailable = errors.New("redis unavailable")

// redisClient is what radix's Pool and Cluster have in common.
type redisClient interface {
	Do(ctx context.Context, a radix.Action) error
	Close() error
}

// Limiter decides requests' hits in Redis.
type Limiter struct {
	client  redisClient    // a pool of connections to one server, or the cluster
	cluster *radix.Cluster // nil: one Redis server
	url     string         // redis:// (a rediss:// URL with its TLS in dialer)
	dialer  *netDialer
	timeout time.Duration
	down    atomic.Bool
}

// New connects a pool of pipelined connections to Redis at url (redis://host:port/db, or
// rediss:// for Redis over TLS).
func New(ctx context.Context, url string, timeout time.Duration, conns int) (*Limiter, error) {
	url, tlsCfg := TLSFor(url)
	dialer := &netDialer{timeout: timeout, tls: tlsCfg}
	cfg := radix.PoolConfig{
		Size:   conns,
		Dialer: radix.Dialer{NetDialer: dialer},
	}
	client, err := cfg.New(ctx, "tcp", url)
	if err != nil {
		return nil, fmt.Errorf("connecting to redis: %w", err)
	}
	return &Limiter{client: client, url: url, dialer: dialer, timeout: timeout}, nil
}

// Down reports whether the circuit is open.
func (l *Limiter) Down() bool { return l.down.Load() }

// Close releases the connections.
func (l *Limiter) Close() error { return l.client.Close() }

// Probe PINGs Redis every interval until ctx ends, opening the circuit after two failures in a
// row and closing it on the first success.
func (l *Limiter) Probe(ctx context.Context, interval time.Duration) {
	var conn radix.Conn
	failures := 0
	for ctx.Err() == nil {
		err := l.ping(ctx, &conn, l.timeout)
		if err == nil {
			failures = 0
		} else {
			failures++
			if conn != nil {
				_ = conn.Close()
				conn = nil
			}
		}
		l.down.Store(failures >= 2) // one slow PING is noise; two in a row is an outage
		if failures == 1 {
			continue // after a first failure, ask again at once
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	if conn != nil {
		_ = conn.Close()
	}
}

func (l *Limiter) ping(ctx context.Context, conn *radix.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if l.cluster != nil {
		return l.pingCluster(ctx)
	}
	if *conn == nil {
		c, err := (radix.Dialer{NetDialer: l.dialer}).Dial(ctx, "tcp", l.url)
		if err != nil {
			return err
		}
		*conn = c
	}
	return (*conn).Do(ctx, radix.Cmd(nil, "PING"))
}

// Decide checks and counts a request's hits: (rejected, one outcome per hit). Standalone, one
// script run; in cluster mode, one per hash slot of the hits' counters (cluster.go).
func (l *Limiter) Decide(ctx context.Context, hits []decide.Hit, nowMs int64, reservation string, reservationTTLMs int64) (bool, []decide.Outcome, error) {
	if l.down.Load() {
		return false, nil, ErrUnavailable
	}
	if l.cluster != nil {
		return l.decideCluster(ctx, hits, nowMs, reservation, reservationTTLMs)
	}
	keys, args := decideCall(hits, nowMs, reservation, reservationTTLMs, false)
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var reply []int64
	if err := l.client.Do(ctx, decideScript.Cmd(&reply, keys, args...)); err != nil {
		return false, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	rejected, outcomes, err := parseDecideReply(reply, len(hits))
	if err != nil {
		return false, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return rejected, outcomes, nil
}

// ReleaseHolds deletes a refused request's quota holds (decide.QuotaHolds), each key with its own
// command (in a cluster they live in different slots), within the decision bound. Deleting a hold
// that does not exist (an unlimited subject) changes nothing.
func (l *Limiter) ReleaseHolds(ctx context.Context, holds []decide.HeldField) error {
	if len(holds) == 0 || l.down.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var first error
	for _, h := range holds {
		if err := doBounded(ctx, l.client, radix.Cmd(nil, "HDEL", h.Key, h.Field)); err != nil && first == nil {
			first = err
		}
	}
	return first
}

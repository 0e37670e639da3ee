// Package limiter counts hits in Redis: every decision is one Lua script run (one round trip) that
// checks all of a request's limits and counts the hits only if the request is allowed.
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
	"strconv"
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

// Limiter decides requests' hits in Redis.
type Limiter struct {
	client  radix.Client
	url     string
	timeout time.Duration
	down    atomic.Bool
}

// New connects a pool of pipelined connections to Redis at url (redis://host:port/db).
func New(ctx context.Context, url string, timeout time.Duration, conns int) (*Limiter, error) {
	cfg := radix.PoolConfig{
		Size:   conns,
		Dialer: radix.Dialer{NetDialer: &netDialer{timeout}},
	}
	client, err := cfg.New(ctx, "tcp", url)
	if err != nil {
		return nil, fmt.Errorf("connecting to redis: %w", err)
	}
	return &Limiter{client: client, url: url, timeout: timeout}, nil
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
	if *conn == nil {
		c, err := (radix.Dialer{NetDialer: &netDialer{timeout}}).Dial(ctx, "tcp", l.url)
		if err != nil {
			return err
		}
		*conn = c
	}
	return (*conn).Do(ctx, radix.Cmd(nil, "PING"))
}

// Decide checks and counts a request's hits: (rejected, one outcome per hit).
func (l *Limiter) Decide(ctx context.Context, hits []decide.Hit, nowMs int64, reservation string, reservationTTLMs int64) (bool, []decide.Outcome, error) {
	if l.down.Load() {
		return false, nil, ErrUnavailable
	}
	n := len(hits)
	keys := make([]string, 0, 2*n+1)
	for i := range hits {
		keys = append(keys, hits[i].Key)
	}
	for i := range hits {
		keys = append(keys, hits[i].Override)
	}
	keys = append(keys, reservation)
	args := make([]string, 0, 3+7*n)
	args = append(args, strconv.FormatInt(nowMs, 10), strconv.Itoa(n), strconv.FormatInt(reservationTTLMs, 10))
	for i := range hits {
		h := &hits[i]
		algo, shadow, reserve := "f", "0", "0"
		if h.Limit.GCRA {
			algo = "g"
		}
		if h.Shadow {
			shadow = "1"
		}
		if h.Reserve {
			reserve = "1"
		}
		args = append(args, strconv.FormatUint(h.Limit.RequestsPerUnit, 10),
			strconv.FormatInt(h.Limit.WindowS()*1000, 10), algo, strconv.FormatUint(h.Hits, 10), shadow, h.Field, reserve)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var reply []int64
	if err := l.client.Do(ctx, decideScript.Cmd(&reply, keys, args...)); err != nil {
		return false, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if len(reply) != 1+4*n {
		return false, nil, fmt.Errorf("%w: unexpected reply of %d values", ErrUnavailable, len(reply))
	}
	outcomes := make([]decide.Outcome, n)
	for i := range outcomes {
		r := reply[1+4*i:]
		outcomes[i] = decide.Outcome{Over: r[0] != 0, Limit: uint64(max(r[1], 0)), Remaining: uint64(max(r[2], 0)), ResetMs: r[3]}
	}
	return reply[0] != 0, outcomes, nil
}

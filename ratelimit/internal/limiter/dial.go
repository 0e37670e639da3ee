package limiter

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"time"
)

// netDialer bounds connecting to Redis by the decision timeout, speaks TLS when tls is set, and
// gives every connection a bound on an overdue reply (replyBound).
type netDialer struct {
	timeout time.Duration
	tls     *tls.Config // nil: plain TCP
	// the name a node reached by IP address is checked against: a cluster's seed host name (a
	// managed cluster announces its nodes by address; they share one certificate for its domain)
	ipName string
}

func (d *netDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: d.timeout}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if d.tls != nil {
		cfg := d.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
			if net.ParseIP(cfg.ServerName) != nil && d.ipName != "" {
				cfg.ServerName = d.ipName
			}
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, d.timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		c = tc
	}
	return &boundedConn{Conn: c, bound: replyBound(d.timeout)}, nil
}

// TLSFor reads a Redis URL's scheme: rediss:// is Redis over TLS (certificates checked against the
// system's roots, or the file SSL_CERT_FILE names), returned as the redis:// URL radix parses and
// a TLS configuration; redis:// is returned as it is, without one.
func TLSFor(url string) (string, *tls.Config) {
	if rest, ok := strings.CutPrefix(url, "rediss://"); ok {
		return "redis://" + rest, &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return url, nil
}

// replyBound is how long a connection waits for a reply before it is closed: radix (v4.1.4)
// stops waiting for a reply when a call's context ends, but then reads (to discard) that late
// reply with no deadline, and every later call on the connection waits behind it, past its own
// context: a Redis that accepts connections and never answers (stopped, or a network that drops
// packets) would hold them for ever. The pool replaces a closed connection.
func replyBound(timeout time.Duration) time.Duration { return max(time.Second, 10*timeout) }

// boundedConn turns radix's "no read deadline" into one replyBound away. radix reads only when it
// waits for a reply, so an idle connection is never closed by this.
type boundedConn struct {
	net.Conn
	bound time.Duration
}

func (c *boundedConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		t = time.Now().Add(c.bound)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *boundedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

package limiter

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// radix unsets the read deadline before every read; a connection then still gives up on a reply
// that never comes (a Redis that stopped answering) instead of blocking for ever.
func TestConnectionsGiveUpOnAReplyThatNeverComes(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := &boundedConn{Conn: client, bound: time.Millisecond}
	defer c.Close()
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	if replyBound(50*time.Millisecond) != time.Second || replyBound(time.Second) != 10*time.Second {
		t.Error("replyBound")
	}
}

func TestTLSForReadsTheScheme(t *testing.T) {
	url, cfg := TLSFor("rediss://:pw@cache.example.com:6379/0")
	if url != "redis://:pw@cache.example.com:6379/0" || cfg == nil || cfg.MinVersion < tls.VersionTLS12 {
		t.Fatalf("rediss: got %q, %v", url, cfg)
	}
	url, cfg = TLSFor("redis://127.0.0.1:6379/0")
	if url != "redis://127.0.0.1:6379/0" || cfg != nil {
		t.Fatalf("redis: got %q, %v", url, cfg)
	}
}

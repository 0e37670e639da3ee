package limiter

import (
	"context"
	"net"
	"time"
)

// netDialer bounds connecting to Redis by the decision timeout.
type netDialer struct{ timeout time.Duration }

func (d *netDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{Timeout: d.timeout}).DialContext(ctx, network, addr)
}

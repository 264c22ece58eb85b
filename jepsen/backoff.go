package jepsen

import (
	"time"

	"google.golang.org/grpc/backoff"
)

var fastBackoff = backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond}

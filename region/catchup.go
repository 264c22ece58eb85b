package region

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
)

// errCannotKnow is the answer of a node that finds no such key, tenant or service in its own state
// and cannot catch up with the leader to make sure: it may only lag (DESIGN.md, "Catching up before NotFound").
var errCannotKnow = &codedError{codes.Unavailable, "region: this node cannot reach the leader to learn whether the key exists; try another node"}

// freshRead reads local state with read; if that finds the tenant, service or version missing, the
// node may only lag behind a write acknowledged elsewhere, so it catches up and reads again. A node
// that cannot catch up answers Unavailable, never NotFound.
func freshRead[T any](ctx context.Context, n *Node, read func() (T, error)) (T, error) {
	v, err := read()
	if !isNotFound(err) {
		return v, err
	}
	if cerr := n.catchUp(ctx); cerr != nil {
		var zero T
		if errors.Is(cerr, context.Canceled) || (errors.Is(cerr, context.DeadlineExceeded) && ctx.Err() != nil) {
			return zero, ctx.Err()
		}
		return zero, errCannotKnow
	}
	return read()
}

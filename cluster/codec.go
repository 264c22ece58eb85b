package cluster

import (
	"errors"
	"fmt"
)

// ResponseCodec encodes the value an FSM's Apply returned so that a
// follower that forwarded the command can hand it to its caller. Only
// responses of forwarded applies are encoded; a leader returns the FSM's
// value itself.
type ResponseCodec interface {
	EncodeResponse(resp any) ([]byte, error)
	DecodeResponse(data []byte) (any, error)
}

// RemoteError is an FSM error response that crossed the wire under
// DefaultCodec. Only its message survives, so errors.Is cannot match it
// against the FSM's sentinels: an FSM whose callers need that supplies its
// own ResponseCodec (with error codes, never parsing messages).
type RemoteError struct {
	Msg string
}

func (e *RemoteError) Error() string { return e.Msg }

// DefaultCodec handles nil, []byte and error responses; anything else
// fails to encode, and the forwarded Apply returns that error.
type DefaultCodec struct{}

const (
	codecNil   byte = 0
	codecBytes byte = 1
	codecError byte = 2
)

// EncodeResponse implements ResponseCodec.
func (DefaultCodec) EncodeResponse(resp any) ([]byte, error) {
	switch v := resp.(type) {
	case nil:
		return []byte{codecNil}, nil
	case []byte:
		return append([]byte{codecBytes}, v...), nil
	case error:
		return append([]byte{codecError}, v.Error()...), nil
	}
	return nil, fmt.Errorf("cluster: DefaultCodec cannot encode a %T response; supply a ResponseCodec", resp)
}

// DecodeResponse implements ResponseCodec.
func (DefaultCodec) DecodeResponse(data []byte) (any, error) {
	if len(data) == 0 {
		return nil, errors.New("cluster: empty response")
	}
	switch data[0] {
	case codecNil:
		return nil, nil
	case codecBytes:
		return append([]byte{}, data[1:]...), nil
	case codecError:
		return &RemoteError{Msg: string(data[1:])}, nil
	}
	return nil, fmt.Errorf("cluster: unknown response tag %d", data[0])
}

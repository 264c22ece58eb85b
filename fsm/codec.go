package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The response codec lets the cluster layer forward a follower's write to the
// leader and hand the leader's response back as if it had been applied
// locally. Errors travel as stable codes plus structured fields, and decode
// to an *Error wrapping the same sentinel: an error is never rebuilt from
// its message.

type wireError struct {
	Code    string `json:"code"`
	Tenant  string `json:"tenant,omitempty"`
	Service string `json:"service,omitempty"`
	Version uint32 `json:"version,omitempty"`
	Field   string `json:"field,omitempty"`
}

type wireResult struct {
	Index     uint64     `json:"index"`
	Tenant    string     `json:"tenant,omitempty"`
	Service   string     `json:"service,omitempty"`
	Version   uint32     `json:"version,omitempty"`
	Seq       uint64     `json:"seq,omitempty"`
	Duplicate bool       `json:"duplicate,omitempty"`
	Cursor    uint64     `json:"cursor,omitempty"`
	Skipped   bool       `json:"skipped,omitempty"`
	EventErr  *wireError `json:"event-error,omitempty"`
}

type wireResponse struct {
	V      int         `json:"v"`
	Result *wireResult `json:"result,omitempty"`
	Error  *wireError  `json:"error,omitempty"`
}

func toWireError(err error) (*wireError, error) {
	code := codeOf(err)
	if code == "" {
		return nil, fmt.Errorf("fsm: encode response: error without a code: %T", err)
	}
	w := &wireError{Code: code}
	var e *Error
	if errors.As(err, &e) {
		w.Tenant, w.Service, w.Version, w.Field = e.Tenant, e.Service, e.Version, e.Field
	}
	return w, nil
}

func fromWireError(w *wireError) (error, error) {
	s := sentinelOf(w.Code)
	if s == nil {
		return nil, fmt.Errorf("fsm: decode response: unknown error code %q", w.Code)
	}
	return &Error{Err: s, Tenant: w.Tenant, Service: w.Service, Version: w.Version, Field: w.Field}, nil
}

func toWireResult(r Result) (*wireResult, error) {
	w := &wireResult{
		Index: r.Index, Tenant: r.Tenant, Service: r.Service, Version: r.Version, Seq: r.Seq,
		Duplicate: r.Duplicate, Cursor: r.Cursor, Skipped: r.Skipped,
	}
	if r.EventErr != nil {
		var err error
		if w.EventErr, err = toWireError(r.EventErr); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func fromWireResult(w *wireResult) (Result, error) {
	r := Result{
		Index: w.Index, Tenant: w.Tenant, Service: w.Service, Version: w.Version, Seq: w.Seq,
		Duplicate: w.Duplicate, Cursor: w.Cursor, Skipped: w.Skipped,
	}
	if w.EventErr != nil {
		var err error
		if r.EventErr, err = fromWireError(w.EventErr); err != nil {
			return Result{}, err
		}
	}
	return r, nil
}

// EncodeResponse encodes what FSM.Apply returned (a Result or an error
// wrapping one of the sentinels) for forwarding between nodes.
func EncodeResponse(v any) ([]byte, error) {
	w := wireResponse{V: EncodingVersion}
	var err error
	switch v := v.(type) {
	case Result:
		w.Result, err = toWireResult(v)
	case *Result:
		w.Result, err = toWireResult(*v)
	case error:
		w.Error, err = toWireError(v)
	default:
		return nil, fmt.Errorf("fsm: encode response: unexpected type %T", v)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

// DecodeResponse decodes what EncodeResponse encoded: a Result, or an *Error
// wrapping the sentinel the leader returned.
func DecodeResponse(b []byte) (any, error) {
	var w wireResponse
	if err := strictUnmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("fsm: decode response: %w", err)
	}
	if w.V != EncodingVersion {
		return nil, fmt.Errorf("fsm: decode response: unsupported version %d", w.V)
	}
	switch {
	case w.Result != nil && w.Error == nil:
		return fromWireResult(w.Result)
	case w.Error != nil && w.Result == nil:
		return fromWireError(w.Error)
	}
	return nil, errors.New("fsm: decode response: want exactly one of result and error")
}

// Codec offers EncodeResponse and DecodeResponse as methods, to be handed to
// the cluster layer as its response codec (cluster.WithResponseCodec).
type Codec struct{}

// EncodeResponse calls EncodeResponse.
func (Codec) EncodeResponse(v any) ([]byte, error) { return EncodeResponse(v) }

// DecodeResponse calls DecodeResponse.
func (Codec) DecodeResponse(b []byte) (any, error) { return DecodeResponse(b) }

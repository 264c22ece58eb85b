package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Event is one security event, written as one JSON line. The JSON keys are
// stable and kebab-case; empty optional fields are omitted. Callers fill in
// what the event is about; Record fills in Seq, Prev and Hash (any values
// the caller set there are ignored), Time when it is zero, and Node when it
// is empty.
//
// No field may ever hold key material: not in Detail, not in Reason, not
// hex- or base64-encoded. An audit log is read by operators and shipped to
// other systems; it is not a place for secrets. Record refuses Detail values
// longer than MaxDetailValue bytes as a guard against a key or blob dumped
// there by mistake, but it cannot tell a 32-byte key from a name: the rule
// is the caller's to keep.
type Event struct {
	// Time is when the event happened, in UTC, written as RFC 3339 with
	// nanoseconds (time.RFC3339Nano). Record sets it if it is zero.
	Time time.Time `json:"time"`
	// Seq numbers the lines of one chain: 1 for the first line, then
	// strictly increasing by one. Set by Record.
	Seq uint64 `json:"seq"`
	// Node names the node that wrote the line (Options.Node by default).
	Node string `json:"node,omitempty"`
	// Kind names the event, as "area.verb": see the Kind constants. Required.
	Kind string `json:"kind"`
	// Actor is the caller's identity (certificate subject, operator name).
	Actor string `json:"actor,omitempty"`
	// Tenant, Service and Version name the key concerned, if any.
	Tenant  string `json:"tenant,omitempty"`
	Service string `json:"service,omitempty"`
	Version uint32 `json:"version,omitempty"`
	// Code is the gRPC status code name of a refusal, as codes.Code.String
	// prints it ("PermissionDenied", "ResourceExhausted").
	Code string `json:"code,omitempty"`
	// Reason says why, in words, for a person.
	Reason string `json:"reason,omitempty"`
	// RequestID ties the event to a request across nodes and logs.
	RequestID string `json:"request-id,omitempty"`
	// Detail holds anything else, as short strings. Never key material.
	// Each value is at most MaxDetailValue bytes.
	Detail map[string]string `json:"detail,omitempty"`
	// Prev is the Hash of the previous line of the chain, or Genesis on
	// the first line. Set by Record.
	Prev string `json:"prev"`
	// Hash is the lowercase hex SHA-256 of the line's body: see the
	// package documentation for exactly which bytes. Set by Record.
	Hash string `json:"hash,omitempty"`
}

// Kinds of event recorded by Krypton. Kind is a free string, so a new kind
// needs no change here, but the names below are stable: tools search for them.
const (
	KindKeyCreate     = "key.create"
	KindKeyRotate     = "key.rotate"
	KindKeyRevoke     = "key.revoke"
	KindKeyDestroy    = "key.destroy"
	KindTenantLock    = "tenant.lock"
	KindTenantUnlock  = "tenant.unlock"
	KindCallRefused   = "call.refused"
	KindOperatorJoin  = "operator.join"
	KindOperatorLeave = "operator.leave"
)

const (
	// Genesis is the Prev of the first line of every chain: the lowercase
	// hex SHA-256 of the 24 ASCII bytes "krypton/audit/v1 genesis".
	Genesis = "efd246aa3b59574d55bb7771d4714e924c9d3a70c31f6b9d0f0ba0655497af43"

	// MaxLineSize is the largest line, newline included, that Record
	// writes and Verify accepts. It bounds the memory a verifier needs.
	MaxLineSize = 64 << 10

	// MaxDetailValue is the longest Detail value, in bytes, that Record
	// accepts: long enough for names, ids and messages, short enough that
	// a dumped blob or certificate is refused rather than logged.
	MaxDetailValue = 1 << 10
)

// hashKey is what a line ends with, before the hex hash and the closing `"}`.
const hashKey = `,"hash":"`

// suffixLen is the length of `,"hash":"` + 64 hex digits + `"}`.
const suffixLen = len(hashKey) + 2*sha256.Size + 2

// encode returns the line for e (whose Hash is ignored), newline included,
// and the line's hash. The body is e encoded without its hash by
// encoding/json: struct fields in declaration order, map keys sorted, no
// HTML escaping. Because Hash is the last field, the line is byte for byte
// what json would write for e with its Hash set.
func encode(e Event) (line []byte, hash string, err error) {
	e.Hash = ""
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, "", err
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	sum := sha256.Sum256(body)
	hash = hex.EncodeToString(sum[:])

	line = make([]byte, 0, len(body)+suffixLen)
	line = append(line, body[:len(body)-1]...) // without the closing '}'
	line = append(line, hashKey...)
	line = append(line, hash...)
	line = append(line, "\"}\n"...)
	return line, hash, nil
}

// topKeys are the only keys a line's object may have, spelt exactly so.
var topKeys = map[string]bool{
	"time": true, "seq": true, "node": true, "kind": true, "actor": true,
	"tenant": true, "service": true, "version": true, "code": true,
	"reason": true, "request-id": true, "detail": true, "prev": true,
}

// parseLine checks one line (without its newline) on its own: that it ends
// with a well-formed hash, that the hash matches its body, and that the body
// is a JSON object with known keys, each once. It returns the event (Hash
// set) or a reason for a ChainError. It never echoes the line.
func parseLine(line []byte) (Event, string) {
	if len(line) < suffixLen+2 || line[0] != '{' {
		return Event{}, "malformed line"
	}
	suffix := line[len(line)-suffixLen:]
	hexHash := suffix[len(hashKey) : len(hashKey)+2*sha256.Size]
	if string(suffix[:len(hashKey)]) != hashKey || string(suffix[len(suffix)-2:]) != "\"}" || !isLowerHex(hexHash) {
		return Event{}, `line does not end with a "hash" field`
	}
	body := make([]byte, 0, len(line)-suffixLen+1)
	body = append(body, line[:len(line)-suffixLen]...)
	body = append(body, '}')
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != string(hexHash) {
		return Event{}, reasonHashMismatch
	}

	var e Event
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || dec.More() {
		return Event{}, "body is not a valid event"
	}
	if reason := checkKeys(body); reason != "" {
		return Event{}, reason
	}
	if e.Kind == "" || e.Time.IsZero() {
		return Event{}, "event has no kind or no time"
	}
	if !isLowerHex([]byte(e.Prev)) || len(e.Prev) != 2*sha256.Size {
		return Event{}, "prev is not a hex SHA-256"
	}
	e.Hash = string(hexHash)
	return e, ""
}

// checkKeys rejects what encoding/json lets through but a verifier in another
// language might read differently: keys in another case ("SEQ" is "seq" to
// encoding/json) and duplicate keys, at the top level and in detail. body has
// already been decoded into an Event, so it is an object at most two deep.
func checkKeys(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // '{'
		return "body is not a valid event"
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return "body is not a valid event"
		}
		if !topKeys[key] {
			return fmt.Sprintf("unknown key %q", key)
		}
		if seen[key] {
			return fmt.Sprintf("duplicate key %q", key)
		}
		seen[key] = true
		if key != "detail" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "body is not a valid event"
			}
			continue
		}
		if reason := checkDetailKeys(dec); reason != "" {
			return reason
		}
	}
	return ""
}

func checkDetailKeys(dec *json.Decoder) string {
	tok, err := dec.Token()
	if err != nil {
		return "body is not a valid event"
	}
	if tok == nil { // "detail":null
		return ""
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return "body is not a valid event"
		}
		if seen[key] {
			return "duplicate key in detail"
		}
		seen[key] = true
		if _, err := dec.Token(); err != nil { // a string value
			return "body is not a valid event"
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return "body is not a valid event"
	}
	return ""
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

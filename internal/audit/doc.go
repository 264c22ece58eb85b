// Package audit writes Krypton's audit log: every security event (a key
// created, rotated, revoked; a tenant locked; a call refused; an operator
// joining) as one JSON line, the lines hash-chained so that a line altered,
// removed or moved is detected by Verify.
//
// A node opens its log with Open, records events with Record from any
// goroutine, and closes it with Close. New writes a chain to any io.Writer.
// Verify checks a whole log.
//
// # Line format
//
// This is the whole contract; a verifier in another language needs nothing
// else. A log is a sequence of lines, each a JSON object (RFC 8259, UTF-8)
// followed by one newline byte (0x0A); no other bytes come between lines or
// after the last one. A line L (without its newline) is
//
//	L = B[:len(B)-1] || `,"hash":"` || H || `"}`
//
// where B, the body, is a JSON object that ends with '}' and has no "hash"
// key, and H is the lowercase hex encoding of SHA-256(B): 64 characters of
// [0-9a-f]. To check a line, a verifier checks that it ends with `,"hash":"`,
// 64 lowercase hex digits and `"}`, removes those 75 bytes, appends '}' to
// get B, and compares the hex of SHA-256(B) with H. The hash is over the
// exact bytes of the line, so no canonical JSON encoding has to be
// reproduced, and every byte of the line but the hash is covered by it.
//
// The body's keys, each at most once and spelt exactly so, are those of
// Event: "time" (RFC 3339 in UTC, "Z", fractional seconds without trailing zeros), "seq",
// "node", "kind", "actor", "tenant", "service", "version", "code", "reason",
// "request-id", "detail" (an object of string values) and "prev"; "time",
// "seq", "kind" and "prev" are always present. The chain is in seq and prev:
//
//   - the first line has "seq":1 and "prev" equal to Genesis, the hex SHA-256
//     of the ASCII bytes "krypton/audit/v1 genesis";
//   - each later line has "seq" one more than the line before and "prev"
//     equal to the H of the line before.
//
// Record writes bodies with Go's encoding/json (fields in the order above,
// empty optional fields omitted, detail keys sorted, no HTML escaping), so
// with its hash a line reads as an ordinary JSON object, but a verifier must
// not depend on that layout: it hashes bytes, it does not re-encode.
//
// # What the chain proves
//
// The hash is keyless: whoever can write the file can write a valid chain.
// The chain shows that nothing was altered, removed, inserted or reordered
// before the last line, and that lines were not lost to a torn write; to
// detect lines removed from the end, or a rewritten tail, keep the last hash
// (Result.LastHash, Event.Hash) out of the node's reach, for instance in a
// later line of another node's log or with an operator.
//
// # Syslog
//
// NewSyslog starts a sink that sends every line to a SIEM as an RFC 5424
// message over TLS (RFC 5425, octet-counted frames): the event's fields,
// seq, prev and hash as structured data (SD-ID SyslogSDID), the line itself
// as the message. Pass its Forward method as Options.Forward. It never
// blocks Record: lines wait in a bounded queue whose oldest line is dropped
// when it is full (counted and logged); the file stays the record. Delivery
// is at least once within the queue: lines sent within ResendWindow before
// a connection broke are sent again on the next one (syslog has no
// acknowledgements), so the SIEM deduplicates on node and seq.
//
// # Secrets
//
// Events never carry key material, in any field or encoding. Record refuses
// Detail values longer than MaxDetailValue bytes to catch blobs and dumps,
// but keeping keys out is the caller's rule.
package audit

package kmip

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// version is a KMIP protocol version.
type version struct{ major, minor int32 }

// supportedVersions are the versions the server speaks, in the order
// Discover Versions advertises them (most preferred first).
var supportedVersions = []version{{2, 0}, {1, 4}, {1, 3}, {1, 2}}

// maxBatchItems bounds the batch items of one message. KMIP sets no limit;
// clients batch a handful, and a message of thousands of Locates would hold
// a connection's worker for a long time.
const maxBatchItems = 64

// defaultVersion answers a message whose own version cannot be read.
var defaultVersion = version{1, 4}

func (v version) supported() bool {
	for _, s := range supportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

func (v version) v2() bool { return v.major >= 2 }

// atLeast reports whether v is major.minor or later.
func (v version) atLeast(major, minor int32) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

func (v version) item() ttlv.Item {
	return ttlv.Struct(ttlv.TagProtocolVersion,
		ttlv.Int(ttlv.TagProtocolVersionMajor, v.major), ttlv.Int(ttlv.TagProtocolVersionMinor, v.minor))
}

func parseVersion(it *ttlv.Item) (version, bool) {
	if it == nil || it.Type != ttlv.TypeStructure {
		return version{}, false
	}
	maj, min := it.Child(ttlv.TagProtocolVersionMajor), it.Child(ttlv.TagProtocolVersionMinor)
	if maj == nil || min == nil || maj.Type != ttlv.TypeInteger || min.Type != ttlv.TypeInteger {
		return version{}, false
	}
	return version{int32(maj.Int), int32(min.Int)}, true
}

// opNames are the operations the server knows by name (for metrics and
// logs); handlers are in ops.go (the table, Query, and the life cycle: Activate, Revoke,
// Destroy), opscreate.go (Create, Register, ReKey), opsread.go (Get, attributes, Locate),
// opsattrs.go (Add, Modify, Delete Attribute, Check) and crypto.go (Encrypt, Decrypt).
var opNames = map[uint32]string{
	ttlv.OpCreate:           "create",
	ttlv.OpLocate:           "locate",
	ttlv.OpGet:              "get",
	ttlv.OpGetAttributes:    "get_attributes",
	ttlv.OpGetAttributeList: "get_attribute_list",
	ttlv.OpActivate:         "activate",
	ttlv.OpRevoke:           "revoke",
	ttlv.OpDestroy:          "destroy",
	ttlv.OpQuery:            "query",
	ttlv.OpDiscoverVersions: "discover_versions",
	ttlv.OpEncrypt:          "encrypt",
	ttlv.OpDecrypt:          "decrypt",
	ttlv.OpAddAttribute:     "add_attribute",
	ttlv.OpModifyAttribute:  "modify_attribute",
	ttlv.OpDeleteAttribute:  "delete_attribute",
	ttlv.OpCheck:            "check",
}

// result is the outcome of one batch item.
type result struct {
	op      uint32
	hasOp   bool
	batchID *ttlv.Item
	payload *ttlv.Item
	err     *opError
}

func (r result) item() ttlv.Item {
	bi := ttlv.Struct(ttlv.TagBatchItem)
	if r.hasOp {
		bi.Children = append(bi.Children, ttlv.Enum(ttlv.TagOperation, r.op))
	}
	if r.batchID != nil {
		bi.Children = append(bi.Children, ttlv.Bytes(ttlv.TagUniqueBatchItemID, r.batchID.Bytes))
	}
	if r.err != nil {
		bi.Children = append(bi.Children,
			ttlv.Enum(ttlv.TagResultStatus, ttlv.StatusOperationFailed),
			ttlv.Enum(ttlv.TagResultReason, r.err.reason),
			ttlv.Text(ttlv.TagResultMessage, r.err.msg))
		if r.payload != nil {
			// A failure that answers with fields (Check's failed
			// parameters).
			bi.Children = append(bi.Children, *r.payload)
		}
		return bi
	}
	bi.Children = append(bi.Children, ttlv.Enum(ttlv.TagResultStatus, ttlv.StatusSuccess))
	if r.payload != nil {
		bi.Children = append(bi.Children, *r.payload)
	}
	return bi
}

func (s *Server) response(v version, results []result) []byte {
	msg := ttlv.Struct(ttlv.TagResponseMessage,
		ttlv.Struct(ttlv.TagResponseHeader,
			v.item(),
			ttlv.DateTime(ttlv.TagTimeStamp, s.now()),
			ttlv.Int(ttlv.TagBatchCount, int32(len(results)))))
	for _, r := range results {
		msg.Children = append(msg.Children, r.item())
	}
	return ttlv.Marshal(msg)
}

// errorResponse is a response of one failed batch item with no operation,
// for a message that could not be read.
func (s *Server) errorResponse(v version, reason uint32, msg string) []byte {
	return s.response(v, []result{{err: &opError{reason: reason, msg: msg}}})
}

// request is one message being processed.
type request struct {
	sess        *session
	log         *slog.Logger
	v           version
	placeholder string   // the ID Placeholder: the last object an item created or found
	wipe        [][]byte // key material and plaintext to clear once the response is encoded
}

// handleMessage processes one request message and returns the encoded
// response. It never fails: whatever is wrong becomes a KMIP error.
func (s *Server) handleMessage(ctx context.Context, sess *session, log *slog.Logger, raw []byte) []byte {
	msg, err := ttlv.Decode(raw, s.limits)
	if err != nil {
		s.metrics.rejected.WithLabelValues("malformed").Inc()
		log.Info("kmip: malformed message", "err", err)
		return s.errorResponse(defaultVersion, ttlv.ReasonInvalidMessage, err.Error())
	}
	invalid := func(why string) []byte {
		s.metrics.rejected.WithLabelValues("invalid").Inc()
		log.Info("kmip: invalid message", "why", why)
		return s.errorResponse(defaultVersion, ttlv.ReasonInvalidMessage, why)
	}
	if msg.Tag != ttlv.TagRequestMessage || msg.Type != ttlv.TypeStructure {
		return invalid("not a Request Message")
	}
	hdr := msg.Child(ttlv.TagRequestHeader)
	if hdr == nil || hdr.Type != ttlv.TypeStructure {
		return invalid("no Request Header")
	}
	v, ok := parseVersion(hdr.Child(ttlv.TagProtocolVersion))
	if !ok {
		return invalid("no valid Protocol Version")
	}
	items := msg.All(ttlv.TagBatchItem)
	bc := hdr.Child(ttlv.TagBatchCount)
	if bc == nil || bc.Type != ttlv.TypeInteger || bc.Int != int64(len(items)) || len(items) == 0 {
		return invalid("Batch Count does not match the batch items")
	}
	if len(items) > maxBatchItems {
		return invalid("more than 64 batch items")
	}
	if len(msg.Children) != 1+len(items) {
		return invalid("unexpected field in Request Message")
	}
	if !v.supported() {
		// Discover Versions is answered whatever the version: it is how a
		// client finds one that works.
		only := true
		for _, it := range items {
			if op := it.Child(ttlv.TagOperation); op == nil || op.Int != int64(ttlv.OpDiscoverVersions) {
				only = false
			}
		}
		if !only {
			s.metrics.rejected.WithLabelValues("version").Inc()
			log.Info("kmip: unsupported protocol version", "major", v.major, "minor", v.minor)
			return s.errorResponse(v, ttlv.ReasonInvalidMessage, "protocol version not supported; use Discover Versions")
		}
	}
	// Authentication in the header is not checked: the client is
	// authenticated by its TLS certificate, which is stronger.
	cont := ttlv.BatchStop
	if o := hdr.Child(ttlv.TagBatchErrorContinuationOption); o != nil {
		if o.Type != ttlv.TypeEnumeration {
			return invalid("Batch Error Continuation Option is not an enumeration")
		}
		switch uint32(o.Int) {
		case ttlv.BatchContinue, ttlv.BatchStop:
			cont = uint32(o.Int)
		case ttlv.BatchUndo:
			return s.errorResponse(v, ttlv.ReasonFeatureNotSupported, "Batch Error Continuation Option Undo is not supported")
		default:
			return invalid("unknown Batch Error Continuation Option")
		}
	}
	var maxResp int64
	if m := hdr.Child(ttlv.TagMaximumResponseSize); m != nil && m.Type == ttlv.TypeInteger && m.Int > 0 {
		maxResp = m.Int
	}

	r := &request{sess: sess, log: log, v: v}
	var results []result
	for _, it := range items {
		res := s.handleItem(ctx, r, it)
		results = append(results, res)
		if res.err != nil && cont == ttlv.BatchStop {
			// Stop: the items after a failure are not processed and not
			// answered (KMIP 1.4 section 6.13).
			break
		}
	}
	out := s.response(v, results)
	defer func() {
		for _, b := range r.wipe {
			clear(b)
		}
		wipeByteStrings(&msg) // Encrypt's plaintext, Decrypt's ciphertext and the like
	}()
	if maxResp > 0 && int64(len(out)) > maxResp {
		clear(out)
		for i := range results {
			results[i].payload = nil
			results[i].err = &opError{reason: ttlv.ReasonResponseTooLarge, msg: "response exceeds Maximum Response Size"}
		}
		out = s.response(v, results)
	}
	return out
}

// wipeByteStrings clears every Byte String of a decoded request.
func wipeByteStrings(it *ttlv.Item) {
	if it.Type == ttlv.TypeByteString {
		clear(it.Bytes)
	}
	for i := range it.Children {
		wipeByteStrings(&it.Children[i])
	}
}

// handleItem runs one batch item.
func (s *Server) handleItem(ctx context.Context, r *request, it *ttlv.Item) (res result) {
	res.batchID = it.Child(ttlv.TagUniqueBatchItemID)
	if res.batchID != nil && res.batchID.Type != ttlv.TypeByteString {
		res.batchID = nil
		res.err = &opError{reason: ttlv.ReasonInvalidMessage, msg: "Unique Batch Item ID is not a byte string"}
		return res
	}
	opItem := it.Child(ttlv.TagOperation)
	if opItem == nil || opItem.Type != ttlv.TypeEnumeration {
		res.err = &opError{reason: ttlv.ReasonInvalidMessage, msg: "batch item has no Operation"}
		return res
	}
	res.op, res.hasOp = uint32(opItem.Int), true
	name := opName(res.op)
	start := time.Now()
	defer func() {
		result := "success"
		if res.err != nil {
			result = reasonName(res.err.reason)
		}
		s.metrics.ops.WithLabelValues(name, result).Inc()
		s.metrics.seconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
	}()
	for _, ext := range it.All(ttlv.TagMessageExtension) {
		if ci := ext.Child(ttlv.TagCriticalityIndicator); ci != nil && ci.Type == ttlv.TypeBoolean && ci.Int == 1 {
			res.err = &opError{reason: ttlv.ReasonFeatureNotSupported, msg: "critical Message Extension not supported"}
			return res
		}
	}
	payload := it.Child(ttlv.TagRequestPayload)
	if payload == nil || payload.Type != ttlv.TypeStructure {
		res.err = &opError{reason: ttlv.ReasonInvalidMessage, msg: "batch item has no Request Payload"}
		return res
	}
	h, ok := handlers[res.op]
	if !ok {
		res.err = &opError{reason: ttlv.ReasonOperationNotSupported, msg: "operation not supported"}
		r.log.Info("kmip: operation not supported", "operation", res.op)
		return res
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	out, err := h(s, octx, r, *payload)
	if err != nil {
		var oe *opError
		if !errors.As(err, &oe) {
			r.log.Error("kmip: operation failed", "kmip-op", name, "err", err)
			oe = &opError{reason: ttlv.ReasonGeneralFailure, msg: "internal error"}
		} else {
			r.log.Info("kmip: operation refused", "kmip-op", name, "reason", reasonName(oe.reason), "msg", oe.msg)
		}
		res.err = oe
		if oe.payload != nil {
			p := ttlv.Struct(ttlv.TagResponsePayload, oe.payload...)
			res.payload = &p
		}
		return res
	}
	r.log.Debug("kmip: operation", "kmip-op", name)
	p := ttlv.Struct(ttlv.TagResponsePayload, out...)
	res.payload = &p
	return res
}

package transport

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/wrap"
)

// Request limits of docs/api.md. Handlers check them first, before any key
// is touched, so that oversized or malformed input is refused whole. Each
// check returns nil or an InvalidArgument status error naming the field and
// the limit, never the bytes.
const (
	// MaxBatchItems is the most items one batch RPC carries.
	MaxBatchItems = 1024
	// MaxPlaintextWireSize is the wire bound of a plaintext field; this
	// version accepts exactly wrap.KeySize bytes within it.
	MaxPlaintextWireSize = 64
	// MaxBlobWireSize is the wire bound of a blob field. Blob format 1
	// makes at most wrap.MaxBlobSize bytes, which CheckBlob enforces.
	MaxBlobWireSize = 1024
)

// CheckBatch checks the number of items of a batch: 1 to MaxBatchItems.
func CheckBatch(n int) error {
	if n < 1 || n > MaxBatchItems {
		return status.Errorf(codes.InvalidArgument, "transport: a batch holds 1 to %d items, not %d", MaxBatchItems, n)
	}
	return nil
}

// CheckPlaintext checks a data key's plaintext: exactly wrap.KeySize bytes.
func CheckPlaintext(plaintext []byte) error {
	if len(plaintext) != wrap.KeySize {
		return status.Errorf(codes.InvalidArgument, "transport: plaintext must be %d bytes, not %d", wrap.KeySize, len(plaintext))
	}
	return nil
}

// CheckContext checks a caller's context (additional authenticated data):
// at most wrap.MaxContextSize bytes, possibly empty.
func CheckContext(context []byte) error {
	if len(context) > wrap.MaxContextSize {
		return status.Errorf(codes.InvalidArgument, "transport: context longer than %d bytes", wrap.MaxContextSize)
	}
	return nil
}

// CheckBlob checks the size of a blob: 1 to wrap.MaxBlobSize bytes. It does
// not parse it (wrap.ParseHeader does, and its errors go through ToStatus).
func CheckBlob(blob []byte) error {
	if len(blob) == 0 {
		return status.Error(codes.InvalidArgument, "transport: blob is empty")
	}
	if len(blob) > wrap.MaxBlobSize {
		return status.Errorf(codes.InvalidArgument, "transport: blob longer than %d bytes", wrap.MaxBlobSize)
	}
	return nil
}

// CheckName checks a tenant, service, region or node name with
// wrap.ValidateName; field names the request field in the message (the
// name itself is never echoed).
func CheckName(field, name string) error {
	if wrap.ValidateName(name) != nil {
		return status.Errorf(codes.InvalidArgument, "transport: %s is not a valid name", field)
	}
	return nil
}

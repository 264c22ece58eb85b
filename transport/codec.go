package transport

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// bufferPool is the pool Krypton's servers and clients marshal and read messages with: gRPC's
// default classes (256 B, 4, 16, 32 KiB, 1 MiB) plus 64, 128 and 256 KiB. With the default pool a
// message of a batch of 256 items (a PackedGenerateDataKey answer is ~38 KB, a BatchWrap answer
// 36–45 KB) lands in the 1 MiB class, which is cleared on every reuse: 17 % of the whole
// process's CPU in BenchmarkOps/packeddatakey256 (docs/performance.md).
var bufferPool = func() mem.BufferPool {
	p, err := mem.NewBinaryTieredBufferPool(8, 12, 14, 15, 16, 17, 18, 20)
	if err != nil {
		panic(err) // the exponents are constants
	}
	return p
}()

// codec is gRPC's protobuf codec (google.golang.org/grpc/encoding/proto) with bufferPool in place
// of gRPC's process-wide default pool. gRPC's codec takes its buffers from the default pool, which
// only experimental.SetDefaultBufferPool changes — for every gRPC client and server in the process,
// the cloud KMS clients of an application that imports this package's client included — so
// servers and clients made here force this copy instead (grpc.ForceServerCodecV2,
// grpc.ForceCodecV2). Same wire format, same name ("proto").
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("transport: cannot marshal %T: not a protobuf message", v)
	}
	// UseCachedSize reuses the Size just computed; the message is not mutated meanwhile.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		// gRPC's codec returns mem.BufferSlice{mem.SliceBuffer(b)}: the slice of one and the
		// slice header boxed in its interface are two allocations per message. Here they are one:
		// the interface holds a pointer into the same object as the slice's array.
		h := &smallMessage{b: b}
		h.s[0] = &h.b
		return h.s[:], nil
	}
	buf := bufferPool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		bufferPool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, bufferPool)}, nil
}

// smallMessage holds a marshalled message below gRPC's pooling threshold as the one Buffer of a
// BufferSlice (*mem.SliceBuffer is a Buffer: SliceBuffer's methods have value receivers).
type smallMessage struct {
	s [1]mem.Buffer
	b mem.SliceBuffer
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("transport: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(bufferPool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

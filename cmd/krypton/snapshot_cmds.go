package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/snapfile"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// `krypton snapshot save` and `restore`: the region's backups, over AdminService's SnapshotSave and
// SnapshotRestore streams. The file is a tar archive of meta.json, state.bin and SHA256SUMS, which
// package snapfile writes and checks (docs/operations.md, "Backups: the snapshot file").

func snapshotCommand() *command {
	return &command{
		name: "snapshot", synopsis: "save and restore the region's state",
		help: "Snapshots hold the region's state machine: tenants, services and sealed keys (never an unsealed key).",
		sub:  []*command{snapshotSaveCommand(), snapshotRestoreCommand()},
	}
}

func snapshotSaveCommand() *command {
	return clientCommand(clientSpec{
		name: "save", synopsis: "save a snapshot of the region to a file", usage: "<file>",
		help: "Streams a consistent snapshot of the region's state to <file> (mode 0600, written atomically: the file appears whole or not at all). The SHA-256 the node sends is checked before the file is kept. " +
			"Prints the size and SHA-256 of the file saved, as `wc -c` and `sha256sum` show them (-format json adds the metadata and state_sha256, the checksum of the state inside, which SHA256SUMS in the archive holds).",
		kind:  pki.KindOperator,
		check: exactArgs(1, "<file>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			path := fs.Arg(0)
			stream, err := c.admin().SnapshotSave(ctx, &kv1.SnapshotSaveRequest{})
			if err != nil {
				return err
			}
			var meta *kv1.SnapshotMeta
			var stateSum string
			// The size and checksum printed are the file's: every byte written to it passes
			// through file (the state's own are meta.Size and stateSum, inside the archive).
			file := &countingHash{h: sha256.New()}
			err = writeFileAtomic(path, true, func(f *os.File) error {
				file.w = f
				meta, stateSum, err = receiveSnapshot(stream, file)
				return err
			})
			if err != nil {
				return err
			}
			out := &snapshotFile{Path: path, Size: file.n, Sha256: hex.EncodeToString(file.h.Sum(nil)), Meta: meta, StateSha256: stateSum}
			return c.outputJSON(s.out, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Saved snapshot of region %s at index %d to %s (%d bytes, sha256 %s)\n",
					meta.GetRegion(), meta.GetIndex(), path, out.Size, out.Sha256)
				return err
			})
		},
	})
}

// snapshotFile is what snapshot save prints with -format json: the file's size and SHA-256, and
// the metadata and checksum of the state inside it.
type snapshotFile struct {
	Path        string
	Size        int64
	Sha256      string
	Meta        *kv1.SnapshotMeta
	StateSha256 string
}

func (f *snapshotFile) MarshalJSON() ([]byte, error) {
	meta, err := protoJSON.Marshal(f.Meta)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `{"path":%q,"size":%d,"sha256":%q,"meta":%s,"state_sha256":%q}`, f.Path, f.Size, f.Sha256, meta, f.StateSha256), nil
}

// countingHash writes to w and counts and hashes what was written.
type countingHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// receiveSnapshot writes the stream as a snapshot archive to w and returns its metadata and the
// hex SHA-256 of its data, after checking it against the one the node sent.
func receiveSnapshot(stream kv1.AdminService_SnapshotSaveClient, w io.Writer) (*kv1.SnapshotMeta, string, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, "", err
	}
	meta := first.GetMeta()
	if meta == nil {
		return nil, "", errors.New("snapshot: the node sent no metadata")
	}
	aw, err := snapfile.NewWriter(w, meta, time.Now())
	if err != nil {
		return nil, "", err
	}
	chunk := first
	for {
		data := chunk.GetData()
		if aw.Written()+uint64(len(data)) > meta.GetSize() {
			return nil, "", fmt.Errorf("snapshot: the node sent more than the %d bytes it announced", meta.GetSize())
		}
		if _, err := aw.Write(data); err != nil {
			return nil, "", err
		}
		if sent := chunk.GetSha256(); sent != nil {
			if subtle.ConstantTimeCompare(sent, aw.Sum()) != 1 {
				return nil, "", errors.New("snapshot: SHA-256 mismatch: the snapshot was damaged in transit; nothing was saved")
			}
			if _, err := stream.Recv(); err != io.EOF {
				return nil, "", errors.New("snapshot: the node sent data after the checksum")
			}
			break
		}
		if chunk, err = stream.Recv(); err != nil {
			if err == io.EOF {
				return nil, "", errors.New("snapshot: the stream ended without a checksum; nothing was saved")
			}
			return nil, "", err
		}
	}
	if n := aw.Written(); n != meta.GetSize() {
		return nil, "", fmt.Errorf("snapshot: got %d bytes of the %d announced; nothing was saved", n, meta.GetSize())
	}
	return meta, hex.EncodeToString(aw.Sum()), aw.Close()
}

// readSnapshotFile checks a snapshot archive (snapfile.Check) and returns its metadata and the
// SHA-256 of its data; the data is streamed again by sendSnapshot.
func readSnapshotFile(path string) (*kv1.SnapshotMeta, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	meta, sum, err := snapfile.Check(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return meta, sum, nil
}

func snapshotRestoreCommand() *command {
	return clientCommand(clientSpec{
		name: "restore", synopsis: "replace the region's state with a snapshot file", usage: "<file>",
		help: "Replaces the whole region's state with the snapshot in <file>, made by `krypton snapshot save`. The file's SHA-256 is checked before anything is sent, and the node applies nothing unless every byte arrived intact. " +
			"Restores run on the leader: when the node at -addr does not lead, the command sends the snapshot to the leader it names.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(1, "<file>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			path := fs.Arg(0)
			meta, sum, err := readSnapshotFile(path)
			if err != nil {
				return err
			}
			admin := c.admin()
			st, err := admin.Status(ctx, &kv1.StatusRequest{})
			if err != nil {
				return err
			}
			if st.GetRaftState() != kv1.RaftState_RAFT_STATE_LEADER && st.GetLeaderAddress() != "" {
				fmt.Fprintf(s.err, "%s does not lead; restoring through the leader %s at %s\n", c.addr, st.GetLeaderId(), st.GetLeaderAddress())
				lcfg := c.cfg
				lcfg.Server.NodeID = st.GetLeaderId() // the leader it named, not whoever has the address
				conn, err := transport.Dial(ctx, st.GetLeaderAddress(), lcfg)
				if err != nil {
					return err
				}
				defer conn.Close()
				admin = kv1.NewAdminServiceClient(conn)
			}
			resp, err := sendSnapshot(ctx, admin, c.requestID, path, meta, sum)
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Restored snapshot of region %s (index %d) from %s; the region's state is now at index %d\n",
					meta.GetRegion(), meta.GetIndex(), path, resp.GetIndex())
				return err
			})
		},
	})
}

// sendSnapshot streams the archive's data in 1 MiB chunks. The checksum goes in the last chunk
// only if the data read now still matches it, so a file changed since readSnapshotFile is refused.
func sendSnapshot(ctx context.Context, admin kv1.AdminServiceClient, requestID, path string, meta *kv1.SnapshotMeta, sum []byte) (*kv1.SnapshotRestoreResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	_, tr, err := snapfile.Open(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // abandons the stream on any error below: the node applies nothing
	stream, err := admin.SnapshotRestore(ctx)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	// Read one chunk ahead, so that the last one is known when it is sent.
	n, rerr := io.ReadFull(tr, buf)
	first := true
	for {
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%s: %w", path, rerr)
		}
		chunk := &kv1.SnapshotChunk{Data: append([]byte(nil), buf[:n]...)}
		h.Write(chunk.Data)
		var nn int
		var next error
		if rerr == nil {
			nn, next = io.ReadFull(tr, buf)
		}
		last := rerr != nil || (nn == 0 && next == io.EOF)
		req := &kv1.SnapshotRestoreRequest{Chunk: chunk}
		if first {
			req.RequestId, chunk.Meta = requestID, meta
			first = false
		}
		if last {
			if subtle.ConstantTimeCompare(sum, h.Sum(nil)) != 1 {
				return nil, fmt.Errorf("%s changed while it was sent; nothing was restored", path)
			}
			chunk.Sha256 = sum
		}
		if err := stream.Send(req); err != nil && err != io.EOF {
			return nil, err
		}
		if last {
			break
		}
		n, rerr = nn, next
	}
	return stream.CloseAndRecv()
}

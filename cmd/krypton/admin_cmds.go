package main

import (
	"archive/tar"
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
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Operator commands: cluster membership, snapshots and tenants, each one AdminService call on the
// node at -addr.

func (c *apiClient) admin() kv1.AdminServiceClient { return kv1.NewAdminServiceClient(c.conn) }

func nargs(fs *flag.FlagSet, min, max int, usage string) error {
	if fs.NArg() < min || fs.NArg() > max {
		return usagef("%s: want %s%s", cmdName(fs), usage, flagsFirstHint(fs))
	}
	return nil
}

// flagsFirstHint explains a wrong argument count caused by a flag written after the arguments
// (`krypton key describe demo app -format json`): Go's flag package stops at the first argument and
// takes the rest as arguments too.
func flagsFirstHint(fs *flag.FlagSet) string {
	for _, a := range fs.Args() {
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			return fmt.Sprintf(" (%s was read as an argument: flags go before the arguments)", a)
		}
	}
	return ""
}

// cmdName is the command's path without the program name: "tenant lock".
func cmdName(fs *flag.FlagSet) string { return strings.TrimPrefix(fs.Name(), "krypton ") }

func exactArgs(n int, usage string) func(fs *flag.FlagSet) error {
	return func(fs *flag.FlagSet) error { return nargs(fs, n, n, usage) }
}

func timeText(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func membersCommand() *command {
	return clientCommand(clientSpec{
		name: "members", synopsis: "list the region's members and their health (gossip)",
		help:  "Lists the members the node at -addr knows through gossip, with their API and Raft addresses and health, as `consul members` does.",
		kind:  pki.KindOperator,
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().Members(ctx, &kv1.MembersRequest{})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				var rows [][]string
				for _, m := range resp.GetMembers() {
					rows = append(rows, []string{m.GetNodeId(), m.GetApiAddress(), m.GetRaftAddress(), enumName(m.GetStatus(), "MEMBER_STATUS_"), m.GetRegion(), m.GetVersion()})
				}
				return table(w, []string{"Node", "API address", "Raft address", "Status", "Region", "Version"}, rows)
			})
		},
	})
}

func statusCommand() *command {
	return clientCommand(clientSpec{
		name: "status", synopsis: "describe the node at -addr: Raft state, leader, serving lease",
		help:  "Describes the node at -addr: its Raft state and indexes, the leader it knows, its serving lease and keyring size. It answers even when the region has no leader.",
		kind:  pki.KindOperator,
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			st, err := c.admin().Status(ctx, &kv1.StatusRequest{})
			if err != nil {
				return err
			}
			return c.output(s.out, st, func(w io.Writer) error {
				leader := st.GetLeaderId()
				if leader == "" {
					leader = "(none known)"
				} else if st.GetLeaderAddress() != "" {
					leader += " (" + st.GetLeaderAddress() + ")"
				}
				uptime := "-"
				if st.GetUptime() != nil {
					uptime = st.GetUptime().AsDuration().Round(time.Second).String()
				}
				rows := [][]string{
					{"Node:", st.GetNodeId()},
					{"Region:", st.GetRegion()},
					{"Version:", st.GetVersion()},
					{"Uptime:", uptime},
					{"Raft state:", enumName(st.GetRaftState(), "RAFT_STATE_")},
					{"Term:", strconv.FormatUint(st.GetTerm(), 10)},
					{"Leader:", leader},
					{"Last log index:", strconv.FormatUint(st.GetLastLogIndex(), 10)},
					{"Commit index:", strconv.FormatUint(st.GetCommitIndex(), 10)},
					{"Applied index:", strconv.FormatUint(st.GetAppliedIndex(), 10)},
					{"Lease:", enumName(st.GetLeaseState(), "LEASE_STATE_")},
					{"Lease expires:", timeText(st.GetLeaseExpiresAt())},
					{"Keyring:", fmt.Sprintf("%d tenant keys, %d service key versions", st.GetKeyringTenantKeys(), st.GetKeyringServiceKeys())},
					{"Governance cursor:", strconv.FormatUint(st.GetGovernanceCursor(), 10)},
				}
				return tableNoHeader(w, rows)
			})
		},
	})
}

func tableNoHeader(w io.Writer, rows [][]string) error {
	var b strings.Builder
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s %s\n", width, r[0], r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func operatorCommand() *command {
	return &command{
		name: "operator", synopsis: "operate the region's Raft cluster",
		sub: []*command{{
			name: "raft", synopsis: "list, remove and lead Raft peers",
			help: "Raft peer management, as `consul operator raft`.",
			sub:  []*command{listPeersCommand(), removePeerCommand(), transferLeaderCommand()},
		}},
	}
}

func listPeersCommand() *command {
	return clientCommand(clientSpec{
		name: "list-peers", synopsis: "list the Raft configuration and the leader",
		help:  "Lists the Raft configuration as the node at -addr has it: every peer, its Raft address, whether it votes, and which one leads.",
		kind:  pki.KindOperator,
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().ListPeers(ctx, &kv1.ListPeersRequest{})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				var rows [][]string
				for _, p := range resp.GetPeers() {
					state := "follower"
					if p.GetLeader() {
						state = "leader"
					}
					voter := strconv.FormatBool(p.GetSuffrage() == kv1.Suffrage_SUFFRAGE_VOTER)
					rows = append(rows, []string{p.GetNodeId(), p.GetRaftAddress(), state, voter})
				}
				return table(w, []string{"Node", "Raft address", "State", "Voter"}, rows)
			})
		},
	})
}

func removePeerCommand() *command {
	return clientCommand(clientSpec{
		name: "remove-peer", synopsis: "remove a dead node from the Raft configuration", usage: "<node-id>",
		help:  "Removes a node that died and will not come back from the Raft configuration. A node that is alive should `krypton leave` instead.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(1, "<node-id>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().RemovePeer(ctx, &kv1.RemovePeerRequest{RequestId: c.requestID, NodeId: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Removed %s from the Raft configuration (index %d)\n", fs.Arg(0), resp.GetIndex())
				return err
			})
		},
	})
}

func transferLeaderCommand() *command {
	return clientCommand(clientSpec{
		name: "transfer-leader", synopsis: "hand leadership to a voter", usage: "[<node-id>]",
		help:  "Asks the leader to hand leadership to <node-id>, or to the most up-to-date voter, and waits until it has.",
		kind:  pki.KindOperator,
		write: true,
		check: func(fs *flag.FlagSet) error { return nargs(fs, 0, 1, "[<node-id>]") },
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().TransferLeadership(ctx, &kv1.TransferLeadershipRequest{RequestId: c.requestID, TargetId: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				if resp.GetLeaderId() == "" {
					_, err := fmt.Fprintf(w, "Leadership transferred; %s does not know the new leader yet (see `krypton operator raft list-peers`)\n", c.addr)
					return err
				}
				_, err := fmt.Fprintf(w, "Leader is now %s (term %d)\n", resp.GetLeaderId(), resp.GetTerm())
				return err
			})
		},
	})
}

func joinCommand() *command {
	return clientCommand(clientSpec{
		name: "join", synopsis: "add a node to the Raft configuration", usage: "<node-id> <raft-addr>",
		help:  "Adds the node <node-id>, reachable for Raft at <raft-addr> (host:port), to the region's Raft configuration, through the node at -addr. Its node certificate must name <node-id>. Joining a node already present with the same address changes nothing.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(2, "<node-id> <raft-addr>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().Join(ctx, &kv1.JoinRequest{RequestId: c.requestID, NodeId: fs.Arg(0), RaftAddress: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Joined %s at %s (index %d)\n", fs.Arg(0), fs.Arg(1), resp.GetIndex())
				return err
			})
		},
	})
}

func leaveCommand() *command {
	return clientCommand(clientSpec{
		name: "leave", synopsis: "make the node at -addr leave the region gracefully",
		help:  "Makes the node at -addr leave the region: it hands over leadership if it leads, is removed from the Raft configuration, leaves gossip and shuts down; its `krypton server` process then exits.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(0, "no arguments (the node at -addr leaves)"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().Leave(ctx, &kv1.LeaveRequest{RequestId: c.requestID})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "The node at %s left the region (index %d)\n", c.addr, resp.GetIndex())
				return err
			})
		},
	})
}

// Snapshot files are tar archives, as consul's are: meta.json (the SnapshotMeta as protojson), then
// state.bin (the data bytes), then SHA256SUMS (sha256sum's format). `tar tf` lists them and
// `sha256sum -c` checks the data by hand.
const (
	snapMetaName  = "meta.json"
	snapStateName = "state.bin"
	snapSumsName  = "SHA256SUMS"
)

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
	metaJSON, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(meta)
	if err != nil {
		return nil, "", err
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	if err := tw.WriteHeader(&tar.Header{Name: snapMetaName, Mode: 0o600, Size: int64(len(metaJSON)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write(metaJSON); err != nil {
		return nil, "", err
	}
	if err := tw.WriteHeader(&tar.Header{Name: snapStateName, Mode: 0o600, Size: int64(meta.GetSize()), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return nil, "", err
	}
	h := sha256.New()
	var n uint64
	chunk := first
	for {
		data := chunk.GetData()
		if n+uint64(len(data)) > meta.GetSize() {
			return nil, "", fmt.Errorf("snapshot: the node sent more than the %d bytes it announced", meta.GetSize())
		}
		h.Write(data)
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
		n += uint64(len(data))
		if sent := chunk.GetSha256(); sent != nil {
			if subtle.ConstantTimeCompare(sent, h.Sum(nil)) != 1 {
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
	if n != meta.GetSize() {
		return nil, "", fmt.Errorf("snapshot: got %d bytes of the %d announced; nothing was saved", n, meta.GetSize())
	}
	sum := hex.EncodeToString(h.Sum(nil))
	sums := sum + "  " + snapStateName + "\n"
	if err := tw.WriteHeader(&tar.Header{Name: snapSumsName, Mode: 0o600, Size: int64(len(sums)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return nil, "", err
	}
	if _, err := io.WriteString(tw, sums); err != nil {
		return nil, "", err
	}
	return meta, sum, tw.Close()
}

// readSnapshotFile checks a snapshot archive: its parts in order, and the data against SHA256SUMS.
// It returns the metadata and the checksum; the data is streamed again by sendSnapshot.
func readSnapshotFile(path string) (*kv1.SnapshotMeta, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	meta, err := nextSnapshotMeta(tr, path)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, tr); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	hdr, err := tr.Next()
	if err != nil || hdr.Name != snapSumsName || hdr.Size > 1024 {
		return nil, nil, fmt.Errorf("%s: not a krypton snapshot (no %s after %s)", path, snapSumsName, snapStateName)
	}
	sums, err := io.ReadAll(tr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	want, _, _ := strings.Cut(string(sums), " ")
	wantSum, err := hex.DecodeString(want)
	if err != nil || len(wantSum) != sha256.Size {
		return nil, nil, fmt.Errorf("%s: malformed %s", path, snapSumsName)
	}
	if subtle.ConstantTimeCompare(wantSum, h.Sum(nil)) != 1 {
		return nil, nil, fmt.Errorf("%s: SHA-256 mismatch: the snapshot is damaged; nothing was restored", path)
	}
	return meta, wantSum, nil
}

// nextSnapshotMeta reads meta.json and positions tr at the start of state.bin.
func nextSnapshotMeta(tr *tar.Reader, path string) (*kv1.SnapshotMeta, error) {
	notSnap := fmt.Errorf("%s: not a krypton snapshot (want a tar archive of %s, %s, %s as `krypton snapshot save` writes)", path, snapMetaName, snapStateName, snapSumsName)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != snapMetaName || hdr.Size > 64<<10 {
		return nil, notSnap
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, notSnap
	}
	meta := &kv1.SnapshotMeta{}
	if err := protojson.Unmarshal(b, meta); err != nil {
		return nil, notSnap
	}
	hdr, err = tr.Next()
	if err != nil || hdr.Name != snapStateName || uint64(hdr.Size) != meta.GetSize() {
		return nil, notSnap
	}
	return meta, nil
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
	tr := tar.NewReader(f)
	if _, err := nextSnapshotMeta(tr, path); err != nil {
		return nil, err
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

func tenantCommand() *command {
	return &command{
		name: "tenant", synopsis: "create, list, describe, lock, unlock and rekey tenants; register their owner key",
		help: "Tenants of the region, each with its L1 anchor (a key in the customer's KMS or HSM) and its tenant key (L2) sealed by it.",
		sub: []*command{
			tenantCreateCommand(), tenantListCommand(), tenantDescribeCommand(), tenantLockCommand(), tenantUnlockCommand(), tenantRekeyCommand(),
			tenantSetOwnerCommand(),
		},
	}
}

func tenantText(w io.Writer, t *kv1.Tenant) error {
	rows := [][]string{
		{"Tenant:", t.GetName()},
		{"State:", enumName(t.GetState(), "TENANT_STATE_")},
		{"Anchor:", t.GetAnchorUri()},
		{"Tenant key version:", strconv.FormatUint(uint64(t.GetTenantKeyVersion()), 10)},
		{"Services:", strconv.FormatUint(uint64(t.GetServiceCount()), 10)},
		{"Created:", timeText(t.GetCreatedAt())},
		{"Owner key:", regionOwnerKeyText(t.GetOwnerKeyFingerprint())},
	}
	if t.GetState() == kv1.TenantState_TENANT_STATE_LOCKED {
		rows = append(rows, []string{"Locked:", timeText(t.GetLockedAt())}, []string{"Locked reason:", t.GetLockedReason()})
	}
	return tableNoHeader(w, rows)
}

func tenantCreateCommand() *command {
	var ownerPub, ownerPEM string
	return tenantAnchorCommand("create", "create a tenant with its L1 anchor", "-anchor <uri> [-owner-pub <file>] <tenant>", "the tenant's L1 anchor URI (required)",
		"Creates <tenant>: the leader generates its tenant key (L2) and seals it through the anchor, a key in the tenant's own KMS or HSM "+
			"(awskms://, gcpkms://, azurekv://, pkcs11:, or file:// for development), after a seal/unseal round trip through it. "+
			"With -owner-pub the tenant's owner key is registered with it: rekeying the tenant then needs the owner's consent. "+
			"Regions fed by governance get their tenants from it instead, and refuse this command naming the one to run there.",
		func(fs *flag.FlagSet) { ownerPubFlag(fs, &ownerPub) },
		func(*flag.FlagSet) (err error) { ownerPEM, err = readOwnerPub(ownerPub); return err },
		func(ctx context.Context, c *apiClient, tenant, uri string) (*kv1.Tenant, error) {
			return c.admin().CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: c.requestID, Tenant: tenant, AnchorUri: uri, OwnerPublicKey: ownerPEM})
		})
}

// tenantAnchorCommand is a tenant write that takes <tenant> and -anchor <uri>: create and rekey.
// flags declares the command's other flags and check reads them (after the arguments are checked).
func tenantAnchorCommand(name, synopsis, usage, flagHelp, help string, flags func(fs *flag.FlagSet), check func(fs *flag.FlagSet) error,
	call func(ctx context.Context, c *apiClient, tenant, uri string) (*kv1.Tenant, error)) *command {
	var anchorURI string
	return clientCommand(clientSpec{
		name: name, synopsis: synopsis, usage: usage,
		help:  help,
		kind:  pki.KindOperator,
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&anchorURI, "anchor", "", flagHelp)
			flags(fs)
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, usage); err != nil {
				return err
			}
			if anchorURI == "" {
				return usagef("%s: -anchor is required", cmdName(fs))
			}
			return check(fs)
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := call(ctx, c, fs.Arg(0), anchorURI)
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return tenantText(w, t) })
		},
	})
}

func tenantListCommand() *command {
	return clientCommand(clientSpec{
		name: "list", synopsis: "list the region's tenants",
		kind:  pki.KindOperator,
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			all := &kv1.ListTenantsResponse{}
			for token := ""; ; {
				resp, err := c.admin().ListTenants(ctx, &kv1.ListTenantsRequest{PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				all.Tenants = append(all.Tenants, resp.GetTenants()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return c.output(s.out, all, func(w io.Writer) error {
				var rows [][]string
				for _, t := range all.GetTenants() {
					rows = append(rows, []string{t.GetName(), enumName(t.GetState(), "TENANT_STATE_"), strconv.FormatUint(uint64(t.GetServiceCount()), 10), timeText(t.GetCreatedAt()), t.GetAnchorUri()})
				}
				return table(w, []string{"Tenant", "State", "Services", "Created", "Anchor"}, rows)
			})
		},
	})
}

func tenantDescribeCommand() *command {
	return clientCommand(clientSpec{
		name: "describe", synopsis: "show a tenant and its service keys", usage: "<tenant>",
		kind:  pki.KindOperator,
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().DescribeTenant(ctx, &kv1.DescribeTenantRequest{Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				if err := tenantText(w, resp.GetTenant()); err != nil {
					return err
				}
				if len(resp.GetKeys()) == 0 {
					return nil
				}
				fmt.Fprintln(w)
				return keysTable(w, resp.GetKeys())
			})
		},
	})
}

func fenceText(w io.Writer, f *kv1.FenceResult) error {
	list := func(ids []string) string {
		if len(ids) == 0 {
			return "none"
		}
		return strings.Join(ids, ", ")
	}
	_, err := fmt.Fprintf(w, "Fence reached at index %d (%s):\n  confirmed (applied it):        %s\n  lease expired (cannot serve):  %s\n",
		f.GetIndex(), timeText(f.GetEffectiveAt()), list(f.GetConfirmedNodes()), list(f.GetLeaseExpiredNodes()))
	return err
}

func tenantLockCommand() *command {
	var reason string
	return clientCommand(clientSpec{
		name: "lock", synopsis: "lock a tenant out of every node", usage: "-reason <text> <tenant>",
		help: "Locks <tenant> out: every use of its keys is refused and every node wipes them from memory. Returns only once no node can use them, " +
			"and says how: nodes that confirmed, and nodes whose serving lease ran out. Reversible with `krypton tenant unlock`.",
		kind:  pki.KindOperator,
		write: true,
		flags: func(fs *flag.FlagSet) { fs.StringVar(&reason, "reason", "", "why, for the audit log (required)") },
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "-reason <text> <tenant>"); err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return usagef("%s: -reason is required", cmdName(fs))
			}
			return nil
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().LockTenant(ctx, &kv1.LockTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Reason: reason})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				fmt.Fprintf(w, "Locked tenant %s\n", fs.Arg(0))
				return fenceText(w, resp.GetFence())
			})
		},
	})
}

func tenantUnlockCommand() *command {
	return clientCommand(clientSpec{
		name: "unlock", synopsis: "lift a tenant's lockout", usage: "<tenant>",
		help:  "Returns a locked tenant to active once the leader has unsealed its tenant key through the anchor again.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.admin().UnlockTenant(ctx, &kv1.UnlockTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return tenantText(w, t) })
		},
	})
}

func tenantRekeyCommand() *command {
	var consentPath, consent string
	return tenantAnchorCommand("rekey", "move a tenant to another L1 anchor (L1 rotation)", "-anchor <uri> -consent <file> <tenant>", "the tenant's new L1 anchor URI (required)",
		"Seals every version of <tenant>'s tenant key (L2) again under the new anchor, after a seal/unseal round trip through it. "+
			"L2 does not change, so nothing wrapped under the tenant needs rewrapping; the old root key may be retired afterwards. "+
			"It needs the tenant owner's consent (-consent), which the owner makes with `krypton owner consent -op rekey -anchor <uri> -region <region>`; "+
			"the change is sent under the request id the consent names.",
		func(fs *flag.FlagSet) {
			fs.StringVar(&consentPath, "consent", "", "the tenant owner's consent file (`krypton owner consent -op rekey`; required)")
		},
		func(fs *flag.FlagSet) (err error) { consent, err = rekeyConsentFlag(fs, consentPath); return err },
		func(ctx context.Context, c *apiClient, tenant, uri string) (*kv1.Tenant, error) {
			return c.admin().RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: c.requestID, Tenant: tenant, AnchorUri: uri, Consent: consent})
		})
}

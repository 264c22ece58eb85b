package region

import (
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/transport"
)

// A region that follows governance (Config.Governance set) has one source of truth for its tenants
// and their keys: governance's log. The admin API's writes that governance owns — creating a tenant
// or a service key, revoking, locking and unlocking a tenant, moving it to another anchor — are
// refused there (DESIGN.md, "One source of truth"): a tenant made by a region-level write is
// unknown to governance, so governance's kill switch, revocation and resync cannot reach it, and a
// region-level unlock could lift governance's lock. What stays the region's own: membership,
// snapshots, leadership, and rotating a key governance created (governance has no rotation; its
// revocation of a service covers every version).

// governedWrite returns the refusal of a write that belongs to governance on a region that
// follows it, naming the governance command that makes the change instead, or nil on a region run
// on its own. It runs before anything is checked, opened or proposed.
func (n *Node) governedWrite(what string, cmd govCommand) error {
	if len(n.cfg.Governance) == 0 {
		return nil
	}
	addr := n.cfg.Governance[0]
	return transport.Coded(codes.FailedPrecondition, "region: this region follows governance ("+strings.Join(n.cfg.Governance, ", ")+
		") and takes its tenants and keys from governance's feed, so that governance's kill switch, revocations and locks reach every one: "+
		what+" at governance: `"+cmd.line(addr)+"`")
}

// govCommand is the krypton command line that makes a refused write at governance. Its parts come
// from the request; a name that is not a valid name, and an anchor URI that does not parse, could
// be stored, or redacts to something else, are replaced by a placeholder rather than echoed.
type govCommand struct {
	words []string // the command: "tenant", "create"
	flags [][2]string
	args  []string
}

func (c govCommand) line(addr string) string {
	parts := append([]string{"krypton"}, c.words...)
	parts = append(parts, "-governance", shellWord(addr))
	for _, f := range c.flags {
		parts = append(parts, "-"+f[0], shellWord(f[1]))
	}
	for _, a := range c.args {
		parts = append(parts, shellWord(a))
	}
	return strings.Join(parts, " ")
}

// nameOr is s if it is a valid tenant or service name, else the placeholder.
func nameOr(s, placeholder string) string {
	if validName(s) {
		return s
	}
	return placeholder
}

// anchorOr is uri if it is a storable anchor URI that redaction leaves unchanged, else
// "<anchor-uri>": a refusal never echoes what could hold a secret.
func anchorOr(uri string) string {
	u, err := anchor.Parse(uri)
	if err != nil || anchor.CheckStorable(u) != nil || anchor.Redact(uri) != uri {
		return "<anchor-uri>"
	}
	return uri
}

// reasonOr is the operator's reason if it is one the region would take, else "<text>".
func reasonOr(r string) string {
	if checkReason(r) != nil {
		return "<text>"
	}
	return r
}

// shellWord quotes s for a POSIX shell when it holds anything but plain characters, so that the
// command in a refusal can be pasted as it is. (Ten lines: no library in go.mod does it, and
// strconv.Quote's double quotes would let a shell expand $ and backticks.)
func shellWord(s string) string {
	if len(s) > 2 && s[0] == '<' && s[len(s)-1] == '>' && validName(s[1:len(s)-1]) {
		return s // a placeholder for what the request did not give usably
	}
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,=@+%", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (n *Node) governedCreateTenant(tenant, anchorURI string, owned bool) error {
	flags := [][2]string{{"anchor", anchorOr(anchorURI)}, {"regions", n.cfg.Region}}
	if owned {
		flags = append(flags, [2]string{"owner-pub", "<file>"})
	}
	return n.governedWrite("create the tenant", govCommand{words: []string{"tenant", "create"}, flags: flags, args: []string{nameOr(tenant, "<tenant>")}})
}

func (n *Node) governedCreateKey(tenant, service string) error {
	return n.governedWrite("create the service (its key is created in every region of the tenant)", govCommand{words: []string{"service", "create"},
		args: []string{nameOr(tenant, "<tenant>"), nameOr(service, "<service>")}})
}

func (n *Node) governedRevoke(s Scope, reason string) error {
	flags := [][2]string{{"tenant", nameOr(s.Tenant, "<tenant>")}}
	if s.Service != "" || s.Version != 0 {
		flags = append(flags, [2]string{"service", nameOr(s.Service, "<service>")})
	}
	if s.Version != 0 {
		flags = append(flags, [2]string{"version", strconv.FormatUint(uint64(s.Version), 10)})
	}
	flags = append(flags, [2]string{"reason", reasonOr(reason)})
	return n.governedWrite("revoke", govCommand{words: []string{"revoke"}, flags: flags})
}

func (n *Node) governedLock(tenant, reason string) error {
	return n.governedWrite("lock the tenant", govCommand{words: []string{"tenant", "lock"},
		flags: [][2]string{{"reason", reasonOr(reason)}}, args: []string{nameOr(tenant, "<tenant>")}})
}

func (n *Node) governedUnlock(tenant string) error {
	return n.governedWrite("unlock the tenant", govCommand{words: []string{"tenant", "unlock"}, args: []string{nameOr(tenant, "<tenant>")}})
}

func (n *Node) governedRekey(tenant, anchorURI string) error {
	return n.governedWrite("move the tenant to another anchor", govCommand{words: []string{"tenant", "set-anchor"},
		flags: [][2]string{{"anchor", anchorOr(anchorURI)}}, args: []string{nameOr(tenant, "<tenant>")}})
}

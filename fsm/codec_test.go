package fsm

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/policy"
)

func TestResponseCodecRoundTrip(t *testing.T) {
	for _, c := range codes {
		in := &Error{Err: c.err, Tenant: "acme", Service: "pay", Version: 3, Field: "x"}
		b, err := EncodeResponse(error(in))
		if err != nil {
			t.Fatalf("%s: %v", c.code, err)
		}
		out, err := DecodeResponse(b)
		if err != nil {
			t.Fatalf("%s: %v", c.code, err)
		}
		got, ok := out.(error)
		if !ok || !errors.Is(got, c.err) || got.Error() != in.Error() {
			t.Fatalf("%s: decoded %#v", c.code, out)
		}
		// A bare sentinel round-trips too.
		b, _ = EncodeResponse(c.err)
		if out, _ := DecodeResponse(b); !errors.Is(out.(error), c.err) {
			t.Fatalf("%s: bare sentinel decoded to %v", c.code, out)
		}
	}
	res := Result{Index: 9, Tenant: "acme", Service: "pay", Version: 4, Seq: 2, Duplicate: true, Cursor: 7,
		EventErr: refuse(ErrTenantNotFound, "elsewhere", "", 0)}
	b, err := EncodeResponse(res)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(Result)
	if !errors.Is(got.EventErr, ErrTenantNotFound) || got.EventErr.Error() != res.EventErr.Error() {
		t.Fatalf("event error = %v", got.EventErr)
	}
	got.EventErr, res.EventErr = nil, nil
	if !reflect.DeepEqual(got, res) {
		t.Fatalf("got %+v, want %+v", got, res)
	}
}

// TestResponseCodecFixed pins the wire form: codes are a contract between
// nodes of different versions.
func TestResponseCodecFixed(t *testing.T) {
	b, _ := EncodeResponse(refuse(ErrRevoked, "acme", "pay", 2))
	if want := `{"v":1,"error":{"code":"revoked","tenant":"acme","service":"pay","version":2}}`; string(b) != want {
		t.Fatalf("got %s", b)
	}
	b, _ = EncodeResponse(Result{Index: 5, Tenant: "acme", Version: 1})
	if want := `{"v":1,"result":{"index":5,"tenant":"acme","version":1}}`; string(b) != want {
		t.Fatalf("got %s", b)
	}
	seen := map[string]bool{}
	for _, c := range codes {
		if seen[c.code] || !strings.HasPrefix(c.err.Error(), "fsm: ") {
			t.Fatalf("bad code table entry %q", c.code)
		}
		seen[c.code] = true
	}
}

func TestCodecType(t *testing.T) {
	var c interface {
		EncodeResponse(any) ([]byte, error)
		DecodeResponse([]byte) (any, error)
	} = Codec{}
	b, err := c.EncodeResponse(refuse(ErrLocked, "acme", "", 0))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.DecodeResponse(b); err != nil || !errors.Is(v.(error), ErrLocked) {
		t.Fatalf("%v, %v", v, err)
	}
}

func TestResponseCodecRefuses(t *testing.T) {
	if _, err := EncodeResponse(errors.New("fsm: something else")); err == nil {
		t.Fatal("encoded an error without a code")
	}
	if _, err := EncodeResponse(42); err == nil {
		t.Fatal("encoded an int")
	}
	for _, in := range []string{
		``, `{}`, `{"v":2,"result":{"index":1}}`, `{"v":1}`,
		`{"v":1,"error":{"code":"no-such-code"}}`,
		`{"v":1,"result":{"index":1},"error":{"code":"revoked"}}`,
		`{"v":1,"result":{"index":1},"extra":1}`,
	} {
		if out, err := DecodeResponse([]byte(in)); err == nil {
			t.Errorf("DecodeResponse(%s) = %v, want error", in, out)
		}
	}
}

func TestEntryEncoding(t *testing.T) {
	cmds := []Command{
		CreateTenant{Tenant: "a", Anchor: "file:///x", SealedL2: []byte{1, 2}},
		RotateTenantKey{Tenant: "a", Version: 2, SealedL2: []byte{3}},
		CreateService{Tenant: "a", Service: "b", SealedL3: []byte{4}, SealedBy: 1},
		RotateServiceKey{Tenant: "a", Service: "b", Version: 2, SealedL3: []byte{5}, SealedBy: 2},
		RevokeTenant{Tenant: "a", Reason: "r"},
		RevokeService{Tenant: "a", Service: "b", Reason: "r"},
		RevokeKeyVersion{Tenant: "a", Service: "b", Version: 1, Reason: "r"},
		LockTenant{Tenant: "a", Reason: "r"},
		UnlockTenant{Tenant: "a"},
		SetAnchor{Tenant: "a", Anchor: "file:///y", Resealed: [][]byte{{6}}},
		DeleteAnchor{Tenant: "a", Reason: "r"},
		ApplyGovernanceEvent{Cursor: 3, EventID: "e", Event: RevokeTenant{Tenant: "a"}},
		ApplyGovernanceEvent{Cursor: 5, After: 3, EventID: "e5", Event: SetAnchor{Tenant: "a", Anchor: "file:///z"},
			Refused: &Error{Err: ErrAnchorMismatch, Tenant: "a"}},
		SetSettings{Settings: DefaultSettings()},
		SetPolicy{Tenant: "a", Policy: policy.Policy{Revision: 4, Rules: []policy.Rule{{Caller: "spiffe://krypton/**", Service: "*", Operations: []policy.Op{policy.Wrap, policy.Rewrap}}}}},
		ResyncTenant{Tenant: "a", Create: &CreateTenant{Tenant: "a", Anchor: "file:///x", SealedL2: []byte{7}},
			Services: []CreateService{{Tenant: "a", Service: "b", SealedL3: []byte{8}, SealedBy: 1}}, Policy: &policy.Policy{Revision: 2}, Lock: "governance: l"},
		ApplyGovernanceEvent{Cursor: 6, After: 5, EventID: "e6", Event: ResyncTenant{Tenant: "a"}},
	}
	for _, c := range cmds {
		e := Entry{RequestID: "r1", At: 12345, Command: c}
		b, err := Encode(e)
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("%s: got %+v, want %+v", c.Type(), got, e)
		}
		// Pointers encode the same as values.
		p := reflect.New(reflect.TypeOf(c))
		p.Elem().Set(reflect.ValueOf(c))
		b2, err := Encode(Entry{RequestID: "r1", At: 12345, Command: p.Interface().(Command)})
		if err != nil || string(b2) != string(b) {
			t.Fatalf("%s: pointer encoding %s, %v", c.Type(), b2, err)
		}
	}
	b, _ := Encode(Entry{At: 1, Command: RotateServiceKey{Tenant: "a", Service: "b", Version: 2, SealedL3: []byte("x"), SealedBy: 1}})
	want := `{"v":1,"type":"rotate-service-key","at":1,"cmd":{"tenant":"a","service":"b","version":2,"sealed-l3":"eA==","sealed-by":1}}`
	if string(b) != want {
		t.Fatalf("wire form changed:\n got %s\nwant %s", b, want)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, in := range []string{
		``,
		`not json`,
		`{"v":2,"type":"unlock-tenant","at":1,"cmd":{"tenant":"a"}}`,
		`{"v":1,"type":"no-such-command","at":1,"cmd":{}}`,
		`{"v":1,"type":"unlock-tenant","at":1,"cmd":{"tenant":"a","extra":1}}`,
		`{"v":1,"type":"unlock-tenant","at":1,"cmd":{"tenant":"a"},"extra":1}`,
		`{"v":1,"type":"unlock-tenant","at":1,"cmd":{"tenant":"a"}} {}`,
		`{"v":1,"type":"governance-event","at":1,"cmd":{"cursor":1,"event-id":"e","type":"governance-event","cmd":{}}}`,
		`{"v":1,"type":"governance-event","at":1,"cmd":{"cursor":1,"event-id":"e","type":"nope","cmd":{}}}`,
	} {
		if e, err := Decode([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), "fsm: ") {
			t.Errorf("Decode(%s) = %+v, %v; want an fsm error", in, e, err)
		}
	}
	if _, err := Encode(Entry{}); err == nil {
		t.Error("encoded an entry without a command")
	}
}

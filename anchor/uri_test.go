package anchor

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		in, scheme, key, canon string
		check                  func(t *testing.T, u URI)
	}{
		{
			in:     "awskms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
			scheme: "awskms", key: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
			canon: "awskms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab?region=eu-west-1",
			check: func(t *testing.T, u URI) {
				if r := u.(*AWSKMSURI).Region; r != "eu-west-1" {
					t.Errorf("region from ARN = %q", r)
				}
			},
		},
		{
			in:     "awskms://alias/krypton-acme?region=us-east-1&endpoint=http://127.0.0.1:4599",
			scheme: "awskms", key: "alias/krypton-acme",
			canon: "awskms://alias/krypton-acme?endpoint=http%3A%2F%2F127.0.0.1%3A4599&region=us-east-1",
			check: func(t *testing.T, u URI) {
				a := u.(*AWSKMSURI)
				if a.Endpoint != "http://127.0.0.1:4599" || a.Region != "us-east-1" {
					t.Errorf("got %+v", a)
				}
			},
		},
		{
			in:     "awskms://arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/root?region=us-gov-west-1",
			scheme: "awskms", key: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/root",
		},
		{in: "awskms://mrk-1234abcd12ab34cd56ef1234567890ab", scheme: "awskms", key: "mrk-1234abcd12ab34cd56ef1234567890ab"},
		{
			in:     "gcpkms://projects/my-project/locations/europe-west1/keyRings/krypton/cryptoKeys/root",
			scheme: "gcpkms", key: "projects/my-project/locations/europe-west1/keyRings/krypton/cryptoKeys/root",
			check: func(t *testing.T, u URI) {
				g := u.(*GCPKMSURI)
				if g.Project != "my-project" || g.Location != "europe-west1" || g.KeyRing != "krypton" || g.CryptoKey != "root" {
					t.Errorf("got %+v", g)
				}
			},
		},
		{
			in:     "gcpkms://projects/example.com:my-project/locations/global/keyRings/k_r/cryptoKeys/K-1?endpoint=127.0.0.1:9443",
			scheme: "gcpkms", key: "projects/example.com:my-project/locations/global/keyRings/k_r/cryptoKeys/K-1",
			canon: "gcpkms://projects/example.com:my-project/locations/global/keyRings/k_r/cryptoKeys/K-1?endpoint=127.0.0.1%3A9443",
		},
		{
			in:     "azurekv://MyVault.vault.azure.net/keys/krypton-root",
			scheme: "azurekv", key: "myvault.vault.azure.net/keys/krypton-root",
			canon: "azurekv://myvault.vault.azure.net/keys/krypton-root",
			check: func(t *testing.T, u URI) {
				if v := u.(*AzureKVURI).VaultURL(); v != "https://myvault.vault.azure.net" {
					t.Errorf("VaultURL = %q", v)
				}
			},
		},
		{
			in:     "azurekv://hsm1.managedhsm.azure.net/keys/root/0123456789abcdef0123456789abcdef",
			scheme: "azurekv", key: "hsm1.managedhsm.azure.net/keys/root/0123456789abcdef0123456789abcdef",
			check: func(t *testing.T, u URI) {
				if v := u.(*AzureKVURI).Version; v != "0123456789abcdef0123456789abcdef" {
					t.Errorf("Version = %q", v)
				}
			},
		},
		{
			in:     "pkcs11:token=krypton;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/krypton/pin",
			scheme: "pkcs11", key: "token=krypton;object=root",
			canon: "pkcs11:token=krypton;object=root?module-path=%2Fusr%2Flib%2Fsofthsm%2Flibsofthsm2.so&pin-source=file%3A%2Fetc%2Fkrypton%2Fpin",
			check: func(t *testing.T, u URI) {
				p := u.(*PKCS11URI)
				if p.ModulePath() != "/usr/lib/softhsm/libsofthsm2.so" || p.PINSource() != "/etc/krypton/pin" {
					t.Errorf("module %q pin-source %q", p.ModulePath(), p.PINSource())
				}
				if _, ok := p.PIN(); ok {
					t.Error("PIN set without pin-value")
				}
			},
		},
		{
			// RFC 7512 section 3 style: percent escapes, id bytes, library
			// attributes, a vendor attribute; attributes in any order.
			in:     "pkcs11:object=my%20key;id=%01%02%ff;token=Krypton%20Dev;library-version=2.6;slot-id=3;type=secret-key;x-vendor=a%3Bb?module-name=softhsm2",
			scheme: "pkcs11",
			key:    "library-version=2.6;slot-id=3;token=Krypton%20Dev;type=secret-key;object=my%20key;id=%01%02%FF;x-vendor=a%3Bb",
			canon:  "pkcs11:library-version=2.6;slot-id=3;token=Krypton%20Dev;type=secret-key;object=my%20key;id=%01%02%FF;x-vendor=a%3Bb?module-name=softhsm2",
			check: func(t *testing.T, u URI) {
				p := u.(*PKCS11URI)
				if p.Object() != "my key" || p.Token() != "Krypton Dev" || string(p.ID()) != "\x01\x02\xff" {
					t.Errorf("object %q token %q id %x", p.Object(), p.Token(), p.ID())
				}
				if n, ok := p.SlotID(); !ok || n != 3 {
					t.Errorf("SlotID = %d, %v", n, ok)
				}
				if v, _ := p.Attr("x-vendor"); v != "a;b" {
					t.Errorf("x-vendor = %q", v)
				}
				if p.ModuleName() != "softhsm2" {
					t.Errorf("ModuleName = %q", p.ModuleName())
				}
			},
		},
		{
			in:     "pkcs11:serial=DECC0401648;id=%A1?pin-value=1234%26secret&module-path=/opt/hsm/lib.so",
			scheme: "pkcs11", key: "serial=DECC0401648;id=%A1",
			canon: "pkcs11:serial=DECC0401648;id=%A1?module-path=%2Fopt%2Fhsm%2Flib.so&pin-value=xxxxx",
			check: func(t *testing.T, u URI) {
				pin, ok := u.(*PKCS11URI).PIN()
				if !ok || pin != "1234&secret" {
					t.Errorf("PIN = %q, %v", pin, ok)
				}
			},
		},
		{in: "file:///var/lib/krypton/root.key", scheme: "file", key: "/var/lib/krypton/root.key"},
		{
			in:     "file://localhost/tmp/dev%20anchor/root.key?create=1",
			scheme: "file", key: "/tmp/dev anchor/root.key",
			canon: "file:///tmp/dev%20anchor/root.key?create=1",
			check: func(t *testing.T, u URI) {
				if !u.(*FileURI).Create {
					t.Error("create=1 not parsed")
				}
			},
		},
		{in: "FILE:///k", scheme: "file", key: "/k", canon: "file:///k"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme() != tc.scheme || u.KeyName() != tc.key {
				t.Errorf("scheme %q key %q, want %q %q", u.Scheme(), u.KeyName(), tc.scheme, tc.key)
			}
			canon := tc.canon
			if canon == "" {
				canon = tc.in
			}
			if u.String() != canon {
				t.Errorf("String() = %q, want %q", u.String(), canon)
			}
			// The canonical form parses to the same key (pin-value aside).
			u2, err := Parse(u.String())
			if err != nil {
				t.Fatalf("canonical form does not parse: %v", err)
			}
			if u2.KeyName() != u.KeyName() || u2.String() != u.String() {
				t.Errorf("canonical form parses to %q", u2.String())
			}
			if tc.check != nil {
				tc.check(t, u)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", ErrInvalidURI},
		{"root.key", ErrInvalidURI},
		{"/var/lib/root.key", ErrInvalidURI},
		{"vault://secret/key", ErrUnknownScheme},
		{"aws-kms://alias/x", ErrUnknownScheme},
		{"awskms:alias/x", ErrInvalidURI},
		{"awskms://", ErrInvalidURI},
		{"awskms://alias/aws/ebs", ErrInvalidURI},
		{"awskms://not-a-key", ErrInvalidURI},
		{"awskms://arn:aws:kms:eu-west-1:111122223333:key/abc?region=us-east-1", ErrInvalidURI},
		{"awskms://alias/x?region=mars", ErrInvalidURI},
		{"awskms://alias/x?regoin=eu-west-1", ErrInvalidURI},
		{"awskms://alias/x?region=eu-west-1&region=eu-west-1", ErrInvalidURI},
		{"awskms://alias/x?endpoint=ftp://h", ErrInvalidURI},
		{"awskms://alias/x?endpoint=https://user:pass@h", ErrInvalidURI},
		{"awskms://alias/x?endpoint", ErrInvalidURI},
		{"awskms://alias/x y", ErrInvalidURI},
		{"gcpkms://projects/p/locations/l/keyRings/r", ErrInvalidURI},
		{"gcpkms://projects/my-project/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", ErrInvalidURI},
		{"gcpkms://projects/P!/locations/global/keyRings/r/cryptoKeys/k", ErrInvalidURI},
		{"gcpkms://projects/my-project/locations/global/keyRings/r/cryptoKeys/k?endpoint=noport", ErrInvalidURI},
		{"gcpkms://folders/my-project/locations/global/keyRings/r/cryptoKeys/k", ErrInvalidURI},
		{"azurekv://vault.azure.net/secrets/x", ErrInvalidURI},
		{"azurekv://vault.azure.net/keys/", ErrInvalidURI},
		{"azurekv://vault.azure.net/keys/a_b", ErrInvalidURI},
		{"azurekv://vault.azure.net/keys/a/v/extra", ErrInvalidURI},
		{"azurekv://vault.azure.net/keys/a?api-version=1", ErrInvalidURI},
		{"azurekv://user@vault.azure.net/keys/a", ErrInvalidURI},
		{"azurekv://-bad.net/keys/a", ErrInvalidURI},
		{"pkcs11:", ErrInvalidURI},
		{"pkcs11:token=t", ErrInvalidURI},
		{"pkcs11:object=o", ErrInvalidURI},
		{"pkcs11:token=t;object=o;object=p", ErrInvalidURI},
		{"pkcs11:token=t;object=o;tokn=x", ErrInvalidURI},
		{"pkcs11:token=t;object=o;type=private", ErrInvalidURI},
		{"pkcs11:token=t;object=o;slot-id=x", ErrInvalidURI},
		{"pkcs11:token=t;object=o;library-version=2.6.1", ErrInvalidURI},
		{"pkcs11:token=t;object=o;id=%zz", ErrInvalidURI},
		{"pkcs11:token=t;object=", ErrInvalidURI},
		{"pkcs11:token=t;object=a/b", ErrInvalidURI},
		{"pkcs11:token=t;object=o;pin-value=1234", ErrInvalidURI},
		{"pkcs11:token=t;object=o?pin-value=1234&pin-source=/etc/pin", ErrInvalidURI},
		{"pkcs11:token=t;object=o?pin-source=pin.txt", ErrInvalidURI},
		{"pkcs11:token=t;object=o?module-path=lib.so", ErrInvalidURI},
		{"pkcs11:token=t;object=o?module-name=/lib/x.so", ErrInvalidURI},
		{"pkcs11:token=t;object=o?pin=1234", ErrInvalidURI},
		{"pkcs11:token=t;object=o?pin-value", ErrInvalidURI},
		{"file://root.key", ErrInvalidURI},
		{"file://host/root.key", ErrInvalidURI},
		{"file:///var/../etc/root.key", ErrInvalidURI},
		{"file:///var/lib/", ErrInvalidURI},
		{"file:///k?create=maybe", ErrInvalidURI},
		{"file:///k?mode=0644", ErrInvalidURI},
		{"file:///k#frag", ErrInvalidURI},
		{"file:relative/k", ErrInvalidURI},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("parsed as %v", u)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "anchor: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

// Errors name the part that is wrong, never what the URI holds: a PIN
// or a token label can be in there.
func TestParseErrorsDoNotEcho(t *testing.T) {
	const secret = "s3cr3tpin"
	for _, in := range []string{
		"pkcs11:token=t;object=o?pin-value=" + secret + "&pin-source=/x",
		"pkcs11:token=t;object=o?pin-value=" + secret + "&bogus=1",
		"pkcs11:token=t;object=o?pin-value=" + secret + "&module-path=rel",
		"pkcs11:token=t;object=o;" + secret,
		"pkcs11:token=t;object=o;" + secret + "=1",
		"pkcs11:token=t;object=o;pin-value=" + secret,
		"pkcs11:token=" + secret,
		"pkcs11:token=t;object=o?pin-value=" + secret + "%zz",
		"awskms://" + secret,
		"awskms://alias/x?" + secret + "=1",
		"gcpkms://projects/" + secret,
		"azurekv://" + secret,
		"file://" + secret + "/k",
		"x" + secret + " " + "://x",
	} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("parsed: the test needs a bad URI")
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error echoes input: %v", err)
		}
	}
}

func TestPKCS11NeverShowsPIN(t *testing.T) {
	const pin = "7733-pin"
	u, err := Parse("pkcs11:token=t;object=o?pin-value=" + pin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{u.String(), u.KeyName(), fmt.Sprint(u), fmt.Sprintf("%v %+v %#v %s %q", u, u, u, u, u)} {
		if strings.Contains(s, pin) {
			t.Errorf("PIN shown in %q", s)
		}
	}
	if got, _ := u.(*PKCS11URI).PIN(); got != pin {
		t.Errorf("PIN() = %q", got)
	}
}

func TestUnknownSchemeListsKnown(t *testing.T) {
	_, err := Parse("vault://x")
	if err == nil || !strings.Contains(err.Error(), `"vault"`) || !strings.Contains(err.Error(), strings.Join(Schemes, ", ")) {
		t.Errorf("error %v should name the scheme and list %v", err, Schemes)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"awskms://alias/x?region=eu-west-1",
		"gcpkms://projects/my-project/locations/global/keyRings/r/cryptoKeys/k",
		"azurekv://v.vault.azure.net/keys/k/1",
		"pkcs11:token=a%20b;object=o;id=%01?pin-value=1&module-path=/x.so",
		"file:///a/b?create=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			return
		}
		// A parsed URI's canonical form parses to itself.
		u2, err := Parse(u.String())
		if err != nil {
			t.Fatalf("canonical %q of a valid URI does not parse: %v", u.String(), err)
		}
		if u2.String() != u.String() || u2.KeyName() != u.KeyName() {
			t.Fatalf("canonical form not stable: %q -> %q", u.String(), u2.String())
		}
	})
}

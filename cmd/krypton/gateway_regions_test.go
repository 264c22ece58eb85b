package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/gateway"
)

// TestParseFailoverRegions: -failover-regions NAME=ADDR[,ADDR...][,NAME=ADDR...] gives the regions
// in the order written; an address before any name, or a name without an address, is refused
// naming the form wanted.
func TestParseFailoverRegions(t *testing.T) {
	t.Parallel()
	got, err := parseFailoverRegions("eu-2=10.0.1.1:7400, 10.0.1.2:7400,us-1=10.0.2.1:7400")
	if err != nil {
		t.Fatal(err)
	}
	want := []gateway.Region{{Name: "eu-2", Addrs: []string{"10.0.1.1:7400", "10.0.1.2:7400"}}, {Name: "us-1", Addrs: []string{"10.0.2.1:7400"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed %+v, want %+v", got, want)
	}
	if got, err := parseFailoverRegions(""); err != nil || got != nil {
		t.Fatalf("empty: %v %v, want none", got, err)
	}
	for in, msg := range map[string]string{
		"10.0.1.1:7400,eu-2=10.0.1.2:7400": "comes before any region name",
		"eu-2=":                            "want NAME=ADDR",
		"=10.0.1.1:7400":                   "want NAME=ADDR",
	} {
		if _, err := parseFailoverRegions(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want an error saying %q", in, err, msg)
		}
	}
}

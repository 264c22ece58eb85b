package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// -region-anchor REGION=URI, repeated: each region once, each with a URI, and a bad one names the
// form wanted.
func TestRegionAnchorsFlag(t *testing.T) {
	parse := func(args ...string) (regionAnchorsFlag, error) {
		f := regionAnchorsFlag{}
		fs := flag.NewFlagSet("create", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Var(f, "region-anchor", "")
		return f, fs.Parse(args)
	}
	f, err := parse("-region-anchor", "us=file:///k/us.key", "-region-anchor", "ap=awskms://alias/acme")
	if err != nil || len(f) != 2 || f["us"] != "file:///k/us.key" || f["ap"] != "awskms://alias/acme" {
		t.Fatalf("parsed %v, %v", f, err)
	}
	for _, bad := range [][]string{
		{"-region-anchor", "us"},
		{"-region-anchor", "=file:///k"},
		{"-region-anchor", "us="},
		{"-region-anchor", "us=a", "-region-anchor", "us=b"},
	} {
		if _, err := parse(bad...); err == nil || !strings.Contains(err.Error(), "region") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

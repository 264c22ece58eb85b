package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/client"
)

// TestDialRegionRefusesAnotherRegion: a client dialling region "eu" refuses a node of region
// "dev" (same CA, a valid node certificate) at the handshake; named right, the same node serves.
func TestDialRegionRefusesAnotherRegion(t *testing.T) {
	r := startRegion()
	defer r.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := client.DialRegion(ctx, "", []string{r.addr}, r.serviceConfig(), "acme", "billing"); err == nil {
		t.Fatal("DialRegion without a region name: no error")
	}
	wrong, err := client.DialRegion(ctx, "eu", []string{r.addr}, r.serviceConfig(), "acme", "billing")
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, err := wrong.Encrypt(ctx, []byte("x"), nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("Encrypt against a node of another region: %v, want Unavailable (the handshake refused)", err)
	}
	right, err := client.DialRegion(ctx, "dev", []string{r.addr}, r.serviceConfig(), "acme", "billing")
	if err != nil {
		t.Fatal(err)
	}
	defer right.Close()
	if _, err := right.Encrypt(ctx, []byte("x"), nil); err != nil {
		t.Fatalf("Encrypt against the region named: %v", err)
	}
}

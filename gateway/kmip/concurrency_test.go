package kmip

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// TestConcurrentClients: many connections of one identity create, use and
// revoke keys at once, and each sees its own results; a revocation racing
// encryptions leaves every later one refused.
func TestConcurrentClients(t *testing.T) {
	e := newEnv(t, nil)
	shared := e.dial("acme", "db")
	sharedID := shared.create(v14, "shared")
	shared.ok(v14, ttlv.OpActivate, uidItem(sharedID))

	const clients, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		c := e.dial("acme", "db")
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for j := range rounds {
					msg := []byte(fmt.Sprintf("client %d round %d", i, j))
					items, err := c.sendErr(v20,
						batchItem(ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v20, 256, "")...)...),
						batchItem(ttlv.OpActivate),
						batchItem(ttlv.OpEncrypt, gcmParams(), ttlv.Bytes(ttlv.TagData, msg)))
					if err != nil {
						return err
					}
					if len(items) != 3 || describeFailure(items[2]) != "success" {
						return fmt.Errorf("client %d: batch failed", i)
					}
					enc := items[2].Child(ttlv.TagResponsePayload)
					dec, err := c.sendErr(v20, batchItem(ttlv.OpDecrypt, *enc.Child(ttlv.TagUniqueIdentifier), gcmParams(),
						*enc.Child(ttlv.TagData), *enc.Child(ttlv.TagIVCounterNonce), *enc.Child(ttlv.TagAuthenticatedEncryptionTag)))
					if err != nil {
						return err
					}
					if p := dec[0].Child(ttlv.TagResponsePayload); p == nil || !bytes.Equal(p.Child(ttlv.TagData).Bytes, msg) {
						return fmt.Errorf("client %d: round trip failed", i)
					}
					// Use the shared key too, while it may be being revoked.
					if _, err := c.sendErr(v14, batchItem(ttlv.OpEncrypt, uidItem(sharedID), ttlv.Bytes(ttlv.TagData, msg))); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	shared.ok(v14, ttlv.OpRevoke, uidItem(sharedID), ttlv.Struct(ttlv.TagRevocationReason,
		ttlv.Enum(ttlv.TagRevocationReasonCode, ttlv.RevocationKeyCompromise)))
	shared.failure(v14, ttlv.ReasonPermissionDenied, ttlv.OpEncrypt, uidItem(sharedID), ttlv.Bytes(ttlv.TagData, []byte("late")))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if ids := uidsOf(shared.ok(v14, ttlv.OpLocate)); len(ids) != 1+clients*rounds {
		t.Fatalf("%d objects, want %d", len(ids), 1+clients*rounds)
	}
}

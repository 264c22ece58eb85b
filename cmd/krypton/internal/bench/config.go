package bench

import (
	"errors"
	"fmt"
	"time"

	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Op is an operation the generator sends.
type Op string

// The operations. OpMixed sends wrap, unwrap, datakey and rewrap in equal shares, each caller
// cycling through them.
const (
	OpWrap    Op = "wrap"
	OpUnwrap  Op = "unwrap"
	OpDataKey Op = "datakey"
	OpRewrap  Op = "rewrap"
	OpMixed   Op = "mixed"
)

// Ops are the operations Config.Op accepts, in the order reports list them.
var Ops = []Op{OpWrap, OpUnwrap, OpDataKey, OpRewrap, OpMixed}

// mixedOps are the operations of OpMixed, in the order a caller cycles through them.
var mixedOps = []Op{OpWrap, OpUnwrap, OpDataKey, OpRewrap}

// BatchForm is the form of the batch RPCs a batched run sends.
type BatchForm string

// The batch forms. Rewrap has no packed form: a batched rewrap always sends BatchRewrap.
const (
	// FormPacked sends PackedWrap, PackedUnwrap and PackedGenerateDataKey: one key reference per
	// batch and the items as repeated bytes.
	FormPacked BatchForm = "packed"
	// FormItems sends BatchWrap, BatchUnwrap and BatchGenerateDataKey: a request message per item.
	FormItems BatchForm = "items"
)

// KeyDist is how a run with Config.Keys > 1 picks each call's key.
type KeyDist string

// The key distributions.
const (
	DistZipf    KeyDist = "zipf"
	DistUniform KeyDist = "uniform"
)

// ZipfS is the exponent of DistZipf: with 10,000 keys the hottest key takes ~9 % of the calls,
// the hottest 100 ~45 %, and every key is drawn now and then.
const ZipfS = 1.1

// MaxKeys bounds Config.Keys.
const MaxKeys = 100_000

// KeyName is the service name of key i (i ≥ 1) of a run spread over several keys; key 0 is
// Service itself.
func KeyName(service string, i int) string { return fmt.Sprintf("%s-%d", service, i) }

// Config is one run of the generator.
type Config struct {
	// Op is the operation sent.
	Op Op
	// Batch is the number of items per call: 0 sends the unary RPCs (Wrap, ...), 1 to
	// transport.MaxBatchItems the batch RPCs with that many items, in BatchForm.
	Batch int
	// BatchForm is the form of the batch RPCs when Batch > 0: FormPacked (PackedWrap, ...; also
	// what "" means) or FormItems (BatchWrap, ...). Rewrap sends BatchRewrap in either.
	BatchForm BatchForm
	// Callers is, in a closed loop, the number of callers, each with one call in flight; with a
	// Rate, the most calls in flight at once (a call that cannot start on time starts late, and
	// its lateness counts in its latency).
	Callers int
	// Rate is the open-loop target in operations (items) per second; 0 runs a closed loop.
	Rate float64
	// Duration is how long the figures are measured, after Warmup.
	Duration time.Duration
	// Warmup is how long the load runs, unmeasured, first: connections, key caches and the
	// runtime settle.
	Warmup time.Duration
	// CallTimeout bounds each call, to between half of it and all of it (see caller.callContext); a
	// call that runs out counts as a DeadlineExceeded error.
	CallTimeout time.Duration
	// ReadyTimeout bounds how long Run waits for each target's first successful wrap, while a
	// freshly started node may still answer Unavailable (no serving lease yet).
	ReadyTimeout time.Duration
	// Tenant and Service name the service key used.
	Tenant  string
	Service string
	// Keys, if more than 1, spreads the calls over that many service keys of Tenant: Service and
	// KeyName(Service, 1) ... KeyName(Service, Keys-1), each call's key drawn by KeyDist. The
	// certificate must be allowed every one of them (a governance policy; bench -spawn sets one).
	// Wrap and datakey only: unwrap and rewrap open the blobs of Service.
	Keys int
	// KeyDist is how calls pick among Keys: DistZipf (s = ZipfS: a few hot keys, a long tail) or
	// DistUniform. "" is DistZipf.
	KeyDist KeyDist
	// Context is the additional data bound to every blob.
	Context []byte
	// GatewayCPU, if set, reads the CPU time a gateway process (another process: `krypton bench
	// -gateway-pid`, or -spawn-gateway -gateway-process) has used so far; it is sampled with
	// this process's over the measured time, and reported per operation beside it.
	GatewayCPU func() (time.Duration, bool) `json:"-"`
	// GatewayBatches, if set, reads how many batches the gateway has sent to the region and how
	// many requests they carried (its krypton_gateway_batch_size histogram), sampled as
	// GatewayCPU is: the mean batch of the measured time explains its CPU per operation.
	GatewayBatches func() (BatchCount, bool) `json:"-"`
	// ServerCPU, if set, reads the CPU time of the process serving the region nodes loaded
	// (`krypton bench -server-pid`): sampled and reported as GatewayCPU is.
	ServerCPU func() (time.Duration, bool) `json:"-"`
}

// BatchCount is a gateway's batches sent to the region and the requests they carried, and the
// data keys it wrapped itself under delegated wrapping keys, so far.
type BatchCount struct{ Batches, Items, Delegated float64 }

// DefaultConfig returns the defaults of `krypton bench`: unary wraps from 16 callers for 10 s
// after a 2 s warm-up. Tenant and Service must still be set.
func DefaultConfig() Config {
	return Config{
		Op:           OpWrap,
		BatchForm:    FormPacked,
		Callers:      16,
		Duration:     10 * time.Second,
		Warmup:       2 * time.Second,
		CallTimeout:  10 * time.Second,
		ReadyTimeout: 30 * time.Second,
		Context:      []byte("krypton-bench"),
	}
}

// MaxCallers bounds Config.Callers: far more than two cores can use, small enough that a typo is
// caught.
const MaxCallers = 10000

// Validate reports the first unusable field of c, by name.
func (c Config) Validate() error {
	switch {
	case !validOp(c.Op):
		return fmt.Errorf("bench: Config.Op %q is not one of wrap, unwrap, datakey, rewrap, mixed", c.Op)
	case c.Batch < 0 || c.Batch > transport.MaxBatchItems:
		return fmt.Errorf("bench: Config.Batch must be 0 (unary) or 1 to %d, not %d", transport.MaxBatchItems, c.Batch)
	case c.BatchForm != "" && c.BatchForm != FormPacked && c.BatchForm != FormItems:
		return fmt.Errorf("bench: Config.BatchForm %q is not packed or items", c.BatchForm)
	case c.Callers < 1 || c.Callers > MaxCallers:
		return fmt.Errorf("bench: Config.Callers must be 1 to %d, not %d", MaxCallers, c.Callers)
	case c.Rate < 0 || c.Rate != c.Rate:
		return errors.New("bench: Config.Rate must not be negative")
	case c.Rate > 0 && c.interval() < time.Microsecond:
		return fmt.Errorf("bench: Config.Rate %g ops/s schedules calls less than 1µs apart; raise Config.Batch", c.Rate)
	case c.Duration <= 0:
		return errors.New("bench: Config.Duration must be positive")
	case c.Warmup < 0:
		return errors.New("bench: Config.Warmup must not be negative")
	case c.CallTimeout <= 0:
		return errors.New("bench: Config.CallTimeout must be positive")
	case c.ReadyTimeout <= 0:
		return errors.New("bench: Config.ReadyTimeout must be positive")
	case wrap.ValidateName(c.Tenant) != nil:
		return errors.New("bench: Config.Tenant is not a valid tenant name")
	case wrap.ValidateName(c.Service) != nil:
		return errors.New("bench: Config.Service is not a valid service name")
	case c.Keys < 0 || c.Keys > MaxKeys:
		return fmt.Errorf("bench: Config.Keys must be 0 to %d, not %d", MaxKeys, c.Keys)
	case c.Keys > 1 && c.Op != OpWrap && c.Op != OpDataKey:
		return fmt.Errorf("bench: Config.Keys > 1 takes Op wrap or datakey, not %s (unwrap and rewrap open the blobs of one key)", c.Op)
	case c.KeyDist != "" && c.KeyDist != DistZipf && c.KeyDist != DistUniform:
		return fmt.Errorf("bench: Config.KeyDist %q is not zipf or uniform", c.KeyDist)
	case len(c.Context) > wrap.MaxContextSize:
		return fmt.Errorf("bench: Config.Context is longer than %d bytes", wrap.MaxContextSize)
	}
	return nil
}

func validOp(op Op) bool {
	for _, o := range Ops {
		if op == o {
			return true
		}
	}
	return false
}

// items is the number of operations one call carries.
func (c Config) items() int { return max(c.Batch, 1) }

// form is the batch form op is sent in: "" for unary calls, FormItems for rewrap (it has no packed
// form), else Config.BatchForm.
func (c Config) form(op Op) BatchForm {
	switch {
	case c.Batch == 0:
		return ""
	case op == OpRewrap || c.BatchForm == FormItems:
		return FormItems
	}
	return FormPacked
}

// interval is the open-loop spacing of calls.
func (c Config) interval() time.Duration {
	return time.Duration(float64(time.Second) * float64(c.items()) / c.Rate)
}

// ops are the operations a run sends.
func (c Config) ops() []Op {
	if c.Op == OpMixed {
		return mixedOps
	}
	return []Op{c.Op}
}

// contexts is Context as the packed requests carry it: one context shared by every item, or none.
func (c Config) contexts() [][]byte {
	if len(c.Context) == 0 {
		return nil
	}
	return [][]byte{c.Context}
}

func (c Config) keyRef() *kv1.KeyRef { return &kv1.KeyRef{Tenant: c.Tenant, Service: c.Service} }

// keyRefs are the keys a run spreads its calls over: Service, then KeyName(Service, i).
func (c Config) keyRefs() []*kv1.KeyRef {
	refs := []*kv1.KeyRef{c.keyRef()}
	for i := 1; i < c.Keys; i++ {
		refs = append(refs, &kv1.KeyRef{Tenant: c.Tenant, Service: KeyName(c.Service, i)})
	}
	return refs
}

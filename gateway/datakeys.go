package gateway

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/envelope"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// learnPolicy installs the tenant's policy from a region node's answer if it is newer than the
// one held: revisions only grow, so a node that lags never takes the gateway back.
func (g *Gateway) learnPolicy(p *kv1.Policy) {
	if p.GetTenant() != g.id.Tenant {
		return
	}
	for {
		cur := g.policy.Load()
		if cur != nil && cur.Revision() >= p.GetRevision() {
			return
		}
		next := policy.Policy{Revision: p.GetRevision()}
		for _, r := range p.GetRules() {
			rule := policy.Rule{Caller: r.GetCaller(), Service: r.GetService()}
			for _, op := range r.GetOperations() {
				if op > 0 && op <= policy.NumOps {
					rule.Operations = append(rule.Operations, policy.Op(op))
				}
			}
			next.Rules = append(next.Rules, rule)
		}
		if g.policy.CompareAndSwap(cur, policy.Compile(next)) {
			g.log.Info("tenant key-use policy", "revision", next.Revision, "rules", len(next.Rules))
			return
		}
	}
}

// callerKey marks a context with the identity of a TCP front-end caller (a service of the
// gateway's tenant); permit checks it against the tenant's policy.
type callerKey struct{}

// permit checks that the caller of ctx, if a TCP front end marked one, may use key for op by the
// tenant's policy (the same compiled matcher the region uses), before the gateway acts for it:
// a call through the gateway needs the policy to allow both that caller (here) and the gateway's
// own service (at the region). Callers of the socket, of KMIP (which serves only the gateway's
// own service) and in process act as the gateway's own service, which only the region checks.
func (g *Gateway) permit(ctx context.Context, key wrap.KeyID, op policy.Op) error {
	c, ok := ctx.Value(callerKey{}).(pki.Identity)
	if !ok || c.Tenant == g.id.Tenant && c.Service == g.id.Service {
		return nil
	}
	p := g.policy.Load()
	if p == nil {
		return status.Error(codes.Unavailable, "gateway: the tenant's key-use policy is not known yet (no region node has answered); retry later")
	}
	if c.Kind == pki.KindService && p.Permits(c.Tenant, c.Service, key.Tenant, key.Service, op) {
		return nil
	}
	rule := "the default rule (a service may use only its own key)"
	if !p.Default() {
		rule = fmt.Sprintf("the tenant's policy (revision %d)", p.Revision())
	}
	return status.Errorf(codes.PermissionDenied, "gateway: %s may not %s with this key: refused by %s", c.String(), op, rule)
}

// resolve fills in the gateway's own tenant and service and refuses another tenant's key.
func (g *Gateway) resolve(k wrap.KeyID) (wrap.KeyID, error) {
	if k.Tenant == "" {
		k.Tenant = g.id.Tenant
	}
	if k.Service == "" {
		k.Service = g.id.Service
	}
	if k.Tenant != g.id.Tenant {
		return k, errOtherTenant
	}
	return k, nil
}

func keyRef(k wrap.KeyID) *kv1.KeyRef {
	return &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service, Version: k.Version}
}

func keyID(r *kv1.KeyRef) wrap.KeyID {
	return wrap.KeyID{Tenant: r.GetTenant(), Service: r.GetService(), Version: r.GetVersion()}
}

// GenerateDataKey makes a fresh 32-byte data key (an L4, born as a wrap.DataKey from crypto/rand
// and destroyed once its copies are out) and has the region wrap it under key (empty fields: the
// gateway's own service key, current version) with context. It returns the plaintext key, the
// wrapped blob and the key version that wrapped it.
func (g *Gateway) GenerateDataKey(ctx context.Context, key wrap.KeyID, context []byte) (plaintext, blob []byte, used wrap.KeyID, err error) {
	ctx, key, finish, err := g.prepareDataKey(ctx, key, context)
	if err != nil {
		return nil, nil, key, err
	}
	defer finish()
	if g.delegated != nil {
		if plaintext, blob, used, ok := g.delegated.generate(key, context); ok {
			return plaintext, blob, used, nil
		}
	}
	// The data key is made with the others of its batch (sendDataKeys: one crypto/rand read and
	// one packed region call per batch).
	res, err := g.datakeys.do(ctx, dataKeyReq{key: key, context: context})
	if err != nil {
		return nil, nil, key, err
	}
	return res.plaintext, res.blob, res.used, nil
}

// prepareDataKey is what GenerateDataKey does before the request joins a batch: it resolves key,
// starts the request's span and checks the policy, the quota and the context. finish, to be
// called once the answer is in, ends the span and gives the quota's concurrency slot back.
func (g *Gateway) prepareDataKey(ctx context.Context, key wrap.KeyID, context []byte) (_ context.Context, _ wrap.KeyID, finish func(), err error) {
	if g.isClosed() {
		return ctx, wrap.KeyID{}, nil, errShutdown
	}
	if key, err = g.resolve(key); err != nil {
		return ctx, key, nil, err
	}
	ctx, span := tracing.StartSpan(ctx, g.tracer, "gateway.generate-data-key")
	if span.IsRecording() {
		span.SetAttributes(tracing.Op.String("generate-data-key"), tracing.Tenant.String(key.Tenant),
			tracing.Service.String(key.Service), tracing.KeyVersion.Int64(int64(key.Version)))
	}
	if err := g.permit(ctx, key, policy.GenerateDataKey); err != nil {
		span.End()
		return ctx, key, nil, err
	}
	release, err := g.admit(key)
	if err != nil {
		span.End()
		return ctx, key, nil, err
	}
	if err := transport.CheckContext(context); err != nil {
		release()
		span.End()
		return ctx, key, nil, err
	}
	return ctx, key, func() { release(); span.End() }, nil
}

// generateDataKeyAsync is GenerateDataKey for the framed protocol's reader, which must not wait:
// it returns the request as a call for the datakeys batcher's submit (nil when it was refused
// before, or made under a delegated key, and answered at once). answer takes the outcome, on the goroutine of the batch that
// answered it; notify is flushed once per batch.
func (g *Gateway) generateDataKeyAsync(ctx context.Context, key wrap.KeyID, context []byte, notify flusher,
	answer func(plaintext, blob []byte, used wrap.KeyID, err error)) *call[dataKeyReq, dataKeyRes] {
	ctx, key, finish, err := g.prepareDataKey(ctx, key, context)
	if err != nil {
		answer(nil, nil, key, err)
		return nil
	}
	if g.delegated != nil {
		if plaintext, blob, used, ok := g.delegated.generate(key, context); ok {
			finish()
			answer(plaintext, blob, used, nil)
			return nil
		}
	}
	c := g.datakeys.newCall()
	c.ctx, c.req, c.notify = ctx, dataKeyReq{key: key, context: context}, notify
	c.then = func(res dataKeyRes, err error) {
		finish()
		if err != nil {
			answer(nil, nil, key, err)
			return
		}
		answer(res.plaintext, res.blob, res.used, nil)
	}
	return c
}

// dataKeyReq and dataKeyRes are a GenerateDataKey in the datakeys batcher.
type dataKeyReq struct {
	key     wrap.KeyID
	context []byte
}

type dataKeyRes struct {
	plaintext, blob []byte
	used            wrap.KeyID
}

// sendDataKeys makes the data keys of one batch, from one crypto/rand read, and has the region
// wrap them, each key's in one PackedWrap (see sendWrapGroup). The plaintexts go to the callers
// as they are: the region's copies are gRPC's, gone once the request is marshalled.
func (g *Gateway) sendDataKeys(ctx context.Context, reqs []dataKeyReq) ([]dataKeyRes, []error) {
	n := len(reqs)
	keys := wrap.NewDataKeys(n)
	// One allocation for the batch's requests and one key reference per distinct key.
	slab := make([]kv1.WrapRequest, n)
	wreqs := make([]*kv1.WrapRequest, n)
	var ref *kv1.KeyRef
	for i := range reqs {
		if i == 0 || reqs[i].key != reqs[i-1].key {
			ref = keyRef(reqs[i].key)
		}
		w := &slab[i]
		w.Key, w.Plaintext, w.Context = ref, keys[i], reqs[i].context
		wreqs[i] = w
	}
	wres, errs := make([]*kv1.WrapResponse, n), make([]error, n)
	if n == 1 {
		// A batch of one (an idle gateway, or batching off) is a unary Wrap, as in sendWraps.
		errs[0] = g.pool.call(ctx, "Wrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
			wres[0], err = c.Wrap(ctx, wreqs[0])
			return err
		})
	} else {
		for _, group := range groupByKey(wreqs) {
			g.sendWrapGroup(ctx, wreqs, group, wres, errs)
		}
	}
	res := make([]dataKeyRes, n)
	var (
		lastRef  *kv1.KeyRef
		lastUsed wrap.KeyID
	)
	for i := range res {
		if errs[i] != nil {
			clear(keys[i])
			continue
		}
		if r := wres[i].GetKey(); r != lastRef {
			lastRef, lastUsed = r, keyID(r)
		}
		res[i] = dataKeyRes{plaintext: keys[i], blob: wres[i].GetBlob(), used: lastUsed}
	}
	return res, errs
}

// Unwrap has the region open a wrapped data key (or serves it from the cache, when on and allowed).
func (g *Gateway) Unwrap(ctx context.Context, blob, context []byte) (plaintext []byte, used wrap.KeyID, err error) {
	p, plaintext, used, err := g.prepareUnwrap(ctx, blob, context)
	if err != nil || plaintext != nil {
		return plaintext, used, err // refused, or served from the cache
	}
	defer p.finish()
	resp, err := g.unwraps.do(p.ctx, &kv1.UnwrapRequest{Blob: blob, Context: context})
	return g.unwrapped(p, blob, context, resp, err)
}

// unwrapPrep is an Unwrap on its way to a batch (see prepareUnwrap).
type unwrapPrep struct {
	ctx    context.Context // with the request's span
	parent wrap.KeyID      // the key the blob names
	epoch  uint64          // the cache's, when the request left for the region
	finish func()          // ends the span, gives the quota's concurrency slot back
}

// prepareUnwrap is what Unwrap does before the request joins a batch: it checks the blob, the
// context, the tenant, the policy and the quota, and serves the key from the cache when it can
// (plaintext then holds it, and the request is done). Otherwise p.finish is to be called once
// the region's answer is in (unwrapped).
func (g *Gateway) prepareUnwrap(ctx context.Context, blob, context []byte) (p unwrapPrep, plaintext []byte, used wrap.KeyID, err error) {
	if g.isClosed() {
		return p, nil, wrap.KeyID{}, errShutdown
	}
	if err := transport.CheckBlob(blob); err != nil {
		return p, nil, wrap.KeyID{}, err
	}
	if err := transport.CheckContext(context); err != nil {
		return p, nil, wrap.KeyID{}, err
	}
	h, err := wrap.ParseHeader(blob)
	if err != nil {
		return p, nil, wrap.KeyID{}, err
	}
	if h.Parent.Tenant != g.id.Tenant {
		return p, nil, h.Parent, errOtherTenant
	}
	if err := g.permit(ctx, h.Parent, policy.Unwrap); err != nil {
		return p, nil, h.Parent, err
	}
	ctx, span := tracing.StartSpan(ctx, g.tracer, "gateway.unwrap")
	if span.IsRecording() {
		span.SetAttributes(tracing.Op.String("unwrap"), tracing.Tenant.String(h.Parent.Tenant),
			tracing.Service.String(h.Parent.Service), tracing.KeyVersion.Int64(int64(h.Parent.Version)))
	}
	// The quota before the cache: a cached unwrap is a request served like any other.
	release, err := g.admit(h.Parent)
	if err != nil {
		span.End()
		return p, nil, h.Parent, err
	}
	p = unwrapPrep{ctx: ctx, parent: h.Parent, finish: func() { release(); span.End() }}
	if g.cache != nil {
		plaintext = make([]byte, wrap.KeySize)
		if id, ok := g.cache.get(blob, context, plaintext); ok {
			p.finish()
			return p, plaintext, id, nil
		}
		p.epoch = g.cache.startEpoch()
	}
	return p, nil, h.Parent, nil
}

// unwrapped is the end of an Unwrap: the region's answer, cached when the cache is on.
func (g *Gateway) unwrapped(p unwrapPrep, blob, context []byte, resp *kv1.UnwrapResponse, err error) ([]byte, wrap.KeyID, error) {
	if err != nil {
		return nil, p.parent, err
	}
	used := keyID(resp.GetKey())
	if g.cache != nil {
		g.cache.put(p.epoch, used, blob, context, resp.GetPlaintext())
	}
	return resp.GetPlaintext(), used, nil
}

// unwrapAsync is Unwrap for the framed protocol's reader (as generateDataKeyAsync): the request as
// a call for the unwraps batcher's submit, or nil when it was answered at once (refused, or
// served from the cache).
func (g *Gateway) unwrapAsync(ctx context.Context, blob, context []byte, notify flusher,
	answer func(plaintext []byte, used wrap.KeyID, err error)) *call[*kv1.UnwrapRequest, *kv1.UnwrapResponse] {
	p, plaintext, used, err := g.prepareUnwrap(ctx, blob, context)
	if err != nil || plaintext != nil {
		answer(plaintext, used, err)
		return nil
	}
	c := g.unwraps.newCall()
	c.ctx, c.req, c.notify = p.ctx, &kv1.UnwrapRequest{Blob: blob, Context: context}, notify
	c.then = func(resp *kv1.UnwrapResponse, err error) {
		p.finish()
		answer(g.unwrapped(p, blob, context, resp, err))
	}
	return c
}

// Encrypt seals data under a fresh data key wrapped by the region (envelope format).
func (g *Gateway) Encrypt(ctx context.Context, key wrap.KeyID, data, context []byte) (ciphertext []byte, used wrap.KeyID, err error) {
	if len(data) > g.cfg.MaxDataSize {
		return nil, key, status.Errorf(codes.InvalidArgument, "gateway: data over %d bytes", g.cfg.MaxDataSize)
	}
	dk, blob, used, err := g.GenerateDataKey(ctx, key, context)
	if err != nil {
		return nil, used, err
	}
	defer clear(dk)
	ct, err := envelope.Seal(dk, blob, data, context)
	if err != nil {
		return nil, used, envelopeStatus(err)
	}
	return ct, used, nil
}

// Decrypt opens a ciphertext made by Encrypt (here, by another gateway of the tenant, or by the
// client package in direct mode).
func (g *Gateway) Decrypt(ctx context.Context, ciphertext, context []byte) (data []byte, used wrap.KeyID, err error) {
	c, err := envelope.Parse(ciphertext)
	if err != nil {
		return nil, wrap.KeyID{}, envelopeStatus(err)
	}
	dk, used, err := g.Unwrap(ctx, c.Blob, context)
	if err != nil {
		return nil, used, err
	}
	defer clear(dk)
	data, err = envelope.Open(dk, c, context)
	if err != nil {
		return nil, used, envelopeStatus(err)
	}
	return data, used, nil
}

// envelopeStatus maps the envelope package's errors to codes.
func envelopeStatus(err error) error {
	switch {
	case errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrVersion),
		errors.Is(err, envelope.ErrOpen), errors.Is(err, envelope.ErrTooLarge), errors.Is(err, envelope.ErrKeySize):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

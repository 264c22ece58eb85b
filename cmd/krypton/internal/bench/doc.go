// Package bench is the load generator behind `krypton bench`: it drives a region's WrapService
// over real gRPC, records every call's latency in an HDR histogram
// (github.com/HdrHistogram/hdrhistogram-go), and reports the figures as a table, a JSON result
// and a latency plot.
//
// Two load models:
//
//   - Closed loop (Config.Rate 0): Config.Callers callers, each with one call in flight, send the
//     next call as soon as the last one returns. Latency is measured from send to answer. This
//     finds the throughput a fixed concurrency reaches, but a slow answer also delays the calls
//     that would have followed it, so the latency percentiles understate what clients arriving
//     independently would see ("coordinated omission").
//   - Open loop (Config.Rate > 0): calls are scheduled at fixed intervals, call i at
//     start + i·interval, whatever happened to earlier calls; up to Config.Callers are in flight.
//     Latency is measured from the intended send time, not the actual one, so a stall of the
//     server (or of the generator) counts in full for every call it delayed, as in wrk2.
//
// Config.Batch > 0 sends batch RPCs of that many items: wrap, unwrap and datakey in the packed form
// (PackedWrap, PackedUnwrap, PackedGenerateDataKey) unless Config.BatchForm is FormItems
// (BatchWrap, BatchUnwrap, BatchGenerateDataKey); rewrap always as BatchRewrap, its only batch
// form. Each caller builds its requests once and reuses them, so the generator allocates nothing
// per item on the request side.
//
// Usage:
//
//	res, err := bench.Run(ctx, bench.Config{
//		Op: bench.OpWrap, Callers: 16, Duration: 10 * time.Second, Warmup: 2 * time.Second,
//		Tenant: "acme", Service: "payments",
//	}, []bench.Target{{Name: addr, Client: kv1.NewWrapServiceClient(conn)}}, nil)
//	if err != nil { ... }
//	res.WriteTable(os.Stdout)
//	res.WriteJSON(f)
//	res.WritePlot("latency.svg")
package bench

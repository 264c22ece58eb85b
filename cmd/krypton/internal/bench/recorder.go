package bench

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

// Latencies are recorded in microseconds, from 1 µs to an hour, with 3 significant digits: a
// value is off by at most 0.1 %, and a histogram holds about 24,000 counters (190 KiB) whatever
// the number of calls. A longer latency is recorded as an hour.
const (
	lowestMicros  = 1
	highestMicros = int64(time.Hour / time.Microsecond)
	sigFigs       = 3
)

// NewHistogram returns an empty latency histogram in microseconds, as the generator records.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(lowestMicros, highestMicros, sigFigs)
}

func micros(d time.Duration) int64 {
	return min(max(d.Microseconds(), lowestMicros), highestMicros)
}

// opStats are the measured figures of one operation.
type opStats struct {
	hist    *hdrhistogram.Histogram // latency of the calls that were answered
	calls   int64                   // calls sent
	items   int64                   // operations sent (calls × items per call)
	ok      int64                   // operations that succeeded
	errors  map[codes.Code]int64    // failed operations by code
	callErr int64                   // calls that failed whole
}

// recorder collects the outcome of every call. One mutex guards everything: a record takes well
// under a microsecond against tens of microseconds for the call itself.
type recorder struct {
	start       time.Time // the run's start, warm-up included
	measureFrom time.Time // calls sent (or due) before this are warm-up
	end         time.Time // no call is sent (or due) at or after this

	mu         sync.Mutex
	byOp       map[Op]*opStats
	interval   *hdrhistogram.Histogram // every answered call since the last tick, warm-up included
	intervalOK int64
	errs       int64 // failed operations so far, warm-up included
	lastTick   time.Time
	timeline   []Point
}

func newRecorder(ops []Op, start, measureFrom, end time.Time) *recorder {
	r := &recorder{start: start, measureFrom: measureFrom, end: end, byOp: map[Op]*opStats{},
		interval: NewHistogram(), lastTick: start}
	for _, op := range ops {
		r.byOp[op] = &opStats{hist: NewHistogram(), errors: map[codes.Code]int64{}}
	}
	return r
}

// outcome is what one call came to.
type outcome struct {
	items int          // operations the call carried
	ok    int          // operations that succeeded
	fails []codes.Code // the code of each failed operation
	whole bool         // the call itself failed (every item in fails)
}

// record files one call of op sent (or due, in an open loop) at sent and answered at done.
func (r *recorder) record(op Op, sent, done time.Time, o outcome) {
	us := micros(done.Sub(sent))
	measured := !sent.Before(r.measureFrom) && sent.Before(r.end)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !o.whole {
		r.interval.RecordValue(us) // in range by construction
	}
	r.intervalOK += int64(o.ok)
	r.errs += int64(len(o.fails))
	if !measured {
		return
	}
	s := r.byOp[op]
	s.calls++
	s.items += int64(o.items)
	s.ok += int64(o.ok)
	if o.whole {
		s.callErr++
	} else {
		s.hist.RecordValue(us)
	}
	for _, c := range o.fails {
		s.errors[c]++
	}
}

// Tick is the live state of a run, once a second.
type Tick struct {
	Elapsed   time.Duration // since the run started, warm-up included
	Warmup    bool          // still warming up
	OpsPerSec float64       // successful operations per second over the last tick
	P50, P99  time.Duration // of the calls answered during the last tick
	Errors    int64         // failed operations so far, warm-up included
}

// Point is one second of the measured run, for the result's timeline.
type Point struct {
	AtSeconds    float64 `json:"at_seconds"` // end of the interval, since measuring began
	OpsPerSecond float64 `json:"ops_per_second"`
	P50Micros    int64   `json:"p50_us"`
	P99Micros    int64   `json:"p99_us"`
	MaxMicros    int64   `json:"max_us"`
}

// tick closes the current interval at now.
func (r *recorder) tick(now time.Time) Tick {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := now.Sub(r.lastTick).Seconds()
	t := Tick{
		Elapsed: now.Sub(r.start),
		Warmup:  r.lastTick.Before(r.measureFrom),
		P50:     time.Duration(r.interval.ValueAtPercentile(50)) * time.Microsecond,
		P99:     time.Duration(r.interval.ValueAtPercentile(99)) * time.Microsecond,
		Errors:  r.errs,
	}
	if secs > 0 {
		t.OpsPerSec = float64(r.intervalOK) / secs
	}
	if !r.lastTick.Before(r.measureFrom) && !now.After(r.end.Add(time.Second)) && secs > 0 {
		r.timeline = append(r.timeline, Point{
			AtSeconds:    now.Sub(r.measureFrom).Seconds(),
			OpsPerSecond: t.OpsPerSec,
			P50Micros:    r.interval.ValueAtPercentile(50),
			P99Micros:    r.interval.ValueAtPercentile(99),
			MaxMicros:    r.interval.Max(),
		})
	}
	r.interval.Reset()
	r.intervalOK = 0
	r.lastTick = now
	return t
}

// finish closes the last, partial interval when it is long enough to say something.
func (r *recorder) finish(now time.Time) {
	r.mu.Lock()
	short := now.Sub(r.lastTick) < 500*time.Millisecond
	r.mu.Unlock()
	if !short {
		r.tick(now)
	}
}

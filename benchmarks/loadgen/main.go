// Command loadgen is the load side of the sse-flask benchmark: it opens N event streams
// on one server, publishes events through the server's own publish endpoint, parses every
// stream as the WHATWG HTML standard says a browser does, and prints what it measured as
// one JSON line.
//
// Standard library only: it is built with `go build` when the harness runs, and no module
// is downloaded.
//
// Each published event's data is the JSON object {"t": <send time>, "s": <sequence>},
// where the send time is nanoseconds on this process's monotonic clock, taken just before
// the publish request is written. A client's latency for an event is the same clock read
// when the blank line that dispatches the event has been parsed, minus "t".
//
// The harness (benchmarks/run.py) drives it over standard input and output, one line each:
//
//	loadgen -> "connected <subscribed> <opened> <seconds>"  all streams are open
//	harness -> "go"                                         (it has read RSS and CPU)
//	loadgen -> "window-start"
//	loadgen -> "window-end"                                 (the harness reads CPU again)
//	loadgen -> "result {...}"                               then it exits
//
// Modes:
//
//	throughput: -publishers publish back to back for -duration seconds. Deliveries per
//	            second counts deliveries received within that window; losses are counted
//	            after a drain of up to -drain seconds.
//	fanout:     one publisher sends -events events at -rate per second; the window ends
//	            when every delivery has arrived or -drain seconds after the last publish.
//	rate:       open loop: -rate events per second for -duration seconds, each handed at
//	            its scheduled time to whichever of -pool concurrent publishers is free, with
//	            the scheduled time as its "t" (a slow answer delays no later publish, and the
//	            wait for a free publisher counts in the latency); a publish issued more than
//	            1 ms after its scheduled time is counted late, and so is one that no
//	            publisher was free to issue before the end of -duration (it is not sent).
//	storm:      a reconnect storm: one event is published and received by every stream,
//	            every connection is closed by this side at once, -missed events are
//	            published, and every stream reconnects at once (no batches) with
//	            Last-Event-ID set to the last id it had. The window ends when the server's
//	            stats count every stream, every stream has its response headers, and (with
//	            -replay) every stream has received the events it missed; or after
//	            -storm-timeout seconds.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var start = time.Now()

// now is nanoseconds since this process started, on the monotonic clock; -clock wall
// makes it Unix nanoseconds instead (see wallClock).
var now = func() int64 { return int64(time.Since(start)) }

type options struct {
	base        string
	eventsPath  string
	publishPath string
	statsPath   string
	mode        string
	streams     int
	publishers  int
	duration    float64
	events      int
	rate        float64
	drain       float64
	batch       int
	stall       float64
	deadline    float64
	pool        int
	missed      int
	replay      bool
	stormWait   float64
	sources     string
	clock       string
	countMetric string
	countBase   int64
	listenOnly  bool
	latencies   string
}

// lateAfter is how long after its scheduled time a publish of the rate mode may be issued
// before it counts as late.
const lateAfter = int64(time.Millisecond)

// ---------------------------------------------------------------------------------------
// One stream's parser: lines split on CRLF, CR or LF; fields data, event, id, retry;
// comments ignored; an event dispatched on a blank line when its data buffer is not empty.

type parser struct {
	line    []byte
	skipLF  bool
	started bool
	data    []byte
	hasData bool
	evType  []byte
	lastID  []byte
	onEvent func(evType, data []byte)
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func (p *parser) feed(b []byte) {
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := bytes.IndexByte(b, '\n')
		limit := i
		if limit < 0 {
			limit = len(b)
		}
		if j := bytes.IndexByte(b[:limit], '\r'); j >= 0 {
			i = j
		}
		if i < 0 {
			p.line = append(p.line, b...)
			return
		}
		line := b[:i]
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line = p.line
		}
		if b[i] == '\r' {
			if i+1 < len(b) {
				if b[i+1] == '\n' {
					i++
				}
			} else {
				p.skipLF = true
			}
		}
		b = b[i+1:]
		p.processLine(line)
		p.line = p.line[:0]
	}
}

func (p *parser) processLine(line []byte) {
	if !p.started {
		p.started = true
		line = bytes.TrimPrefix(line, bom)
	}
	if len(line) == 0 {
		if p.hasData {
			data := p.data
			if len(data) > 0 && data[len(data)-1] == '\n' {
				data = data[:len(data)-1]
			}
			evType := p.evType
			if len(evType) == 0 {
				evType = messageType
			}
			p.onEvent(evType, data)
		}
		p.data = p.data[:0]
		p.hasData = false
		p.evType = p.evType[:0]
		return
	}
	if line[0] == ':' {
		return
	}
	field, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		field, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
		p.hasData = true
	case "event":
		p.evType = append(p.evType[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = append(p.lastID[:0], value...)
		}
	case "retry":
		// Reconnection delay: this client does not reconnect (a lost stream is a loss).
	}
}

var messageType = []byte("message")

// field returns the integer value of the JSON member "name" of a flat object, tolerating
// white space ({"t":1,"s":2} and {"s": 2, "t": 1} alike).
func field(data []byte, name string) (int64, bool) {
	key := `"` + name + `"`
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(data[i+len(key):], " \t")
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t")
	end := 0
	for end < len(rest) && (rest[end] == '-' || (rest[end] >= '0' && rest[end] <= '9')) {
		end++
	}
	v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return v, err == nil
}

// ---------------------------------------------------------------------------------------
// Streams.

type stream struct {
	mu          sync.Mutex
	received    int64
	duplicates  int64
	outOfOrder  int64
	unparsed    int64
	otherEvents int64
	inWindow    int64
	lastSeq     int64
	seen        []uint64
	latencies   []int64
	headers     bool
	err         string
	ended       bool
	// The storm: the id to resume from (kept across connections, as a browser does), when
	// the response headers of the last connection arrived, how many deliveries the stream
	// still waits for, and when the last of them arrived.
	lastID      []byte
	headersAt   int64
	want        int64
	recoveredAt int64
}

type shared struct {
	windowEnd   atomic.Int64 // deliveries received at or before this count in the window
	received    atomic.Int64
	headers     atomic.Int64
	disconnects atomic.Int64
}

func (s *stream) record(evType, data []byte, g *shared) {
	recv := now()
	if !bytes.Equal(evType, messageType) {
		s.otherEvents++
		return
	}
	sent, ok1 := field(data, "t")
	seq, ok2 := field(data, "s")
	if !ok1 || !ok2 || seq <= 0 {
		s.unparsed++
		return
	}
	word, bit := seq/64, uint(seq%64)
	for int64(len(s.seen)) <= word {
		s.seen = append(s.seen, 0)
	}
	if s.seen[word]&(1<<bit) != 0 {
		s.duplicates++
		return
	}
	s.seen[word] |= 1 << bit
	if seq < s.lastSeq {
		s.outOfOrder++
	} else {
		s.lastSeq = seq
	}
	s.received++
	s.latencies = append(s.latencies, recv-sent)
	if s.want > 0 {
		s.want--
		if s.want == 0 {
			s.recoveredAt = recv
		}
	}
	if recv <= g.windowEnd.Load() {
		s.inWindow++
	}
	g.received.Add(1)
}

func runStream(ctx context.Context, client *http.Client, url string, s *stream, g *shared, wg *sync.WaitGroup) {
	defer wg.Done()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	s.mu.Lock()
	if len(s.lastID) > 0 {
		req.Header.Set("Last-Event-ID", string(s.lastID))
	}
	s.mu.Unlock()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.mu.Lock()
			s.err = err.Error()
			s.mu.Unlock()
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		s.mu.Lock()
		s.err = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.headers = true
	s.headersAt = now()
	p := &parser{lastID: append([]byte(nil), s.lastID...)}
	s.mu.Unlock()
	g.headers.Add(1)
	p.onEvent = func(evType, data []byte) {
		s.record(evType, data, g)
		s.lastID = append(s.lastID[:0], p.lastID...)
	}
	buf := make([]byte, 8192)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			s.mu.Lock()
			p.feed(buf[:n])
			s.mu.Unlock()
		}
		if err != nil {
			if ctx.Err() == nil {
				g.disconnects.Add(1)
				s.mu.Lock()
				s.ended = true
				if err != io.EOF {
					s.err = err.Error()
				} else {
					s.err = "the server ended the stream"
				}
				s.mu.Unlock()
			}
			return
		}
	}
}

// ---------------------------------------------------------------------------------------
// Publishing and stats.

type publisher struct {
	client    *http.Client
	url       string
	seq       *atomic.Int64
	mu        sync.Mutex
	ok        int64
	failed    int64
	failedSeq map[int64]bool
	errors    map[string]int
	rtts      []int64
}

// publish posts the next event with "t" = sent, and waits for the answer.
func (p *publisher) publish(sent int64) {
	seq := p.seq.Add(1)
	body := make([]byte, 0, 64)
	body = append(body, `{"data":{"t":`...)
	body = strconv.AppendInt(body, sent, 10)
	body = append(body, `,"s":`...)
	body = strconv.AppendInt(body, seq, 10)
	body = append(body, `}}`...)
	issued := now()
	resp, err := p.client.Post(p.url, "application/json", bytes.NewReader(body))
	problem := ""
	if err != nil {
		problem = err.Error()
	} else {
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			problem = fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, strings.TrimSpace(string(answer)))
		}
	}
	rtt := now() - issued
	p.mu.Lock()
	defer p.mu.Unlock()
	if problem == "" {
		p.ok++
		p.rtts = append(p.rtts, rtt)
		return
	}
	p.failed++
	p.failedSeq[seq] = true
	if len(p.errors) < 20 || p.errors[problem] > 0 {
		p.errors[problem]++
	}
	if err != nil {
		time.Sleep(10 * time.Millisecond) // no hot loop against a server that refuses
	}
}

func consumers(client *http.Client, url string) (int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return -1, err
	}
	n, ok := doc["consumers"].(float64)
	if !ok {
		return -1, fmt.Errorf("%s has no number 'consumers'", url)
	}
	return int64(n), nil
}

// ---------------------------------------------------------------------------------------

type summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// summarize returns milliseconds; percentiles by nearest rank.
func summarize(ns []int64) *summary {
	if len(ns) == 0 {
		return nil
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ns)))) - 1
		if i < 0 {
			i = 0
		}
		return float64(ns[i]) / 1e6
	}
	var total float64
	for _, v := range ns {
		total += float64(v)
	}
	return &summary{
		Count: int64(len(ns)), Mean: total / float64(len(ns)) / 1e6,
		P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: float64(ns[len(ns)-1]) / 1e6,
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func say(line string) {
	fmt.Println(line)
	os.Stdout.Sync()
}

func main() {
	var o options
	flag.StringVar(&o.base, "url", "http://127.0.0.1:8080", "server base URL")
	flag.StringVar(&o.eventsPath, "events-path", "/events", "stream path")
	flag.StringVar(&o.publishPath, "publish-path", "/say", "publish path (POST JSON {\"data\": ...})")
	flag.StringVar(&o.statsPath, "stats-path", "/stats", "path answering JSON {\"consumers\": n}")
	flag.StringVar(&o.mode, "mode", "throughput", "throughput, fanout, rate or storm")
	flag.IntVar(&o.streams, "streams", 100, "streams to open")
	flag.IntVar(&o.publishers, "publishers", 4, "throughput: publishers, back to back")
	flag.Float64Var(&o.duration, "duration", 10, "throughput: seconds of publishing")
	flag.IntVar(&o.events, "events", 20, "fanout: events to publish")
	flag.Float64Var(&o.rate, "rate", 2, "fanout, rate: events per second")
	flag.IntVar(&o.pool, "pool", 64, "rate: concurrent publishers")
	flag.IntVar(&o.missed, "missed", 50, "storm: events published while the streams are away")
	flag.BoolVar(&o.replay, "replay", false, "storm: wait for every stream to receive the events it missed")
	flag.Float64Var(&o.stormWait, "storm-timeout", 60, "storm: seconds to wait for the reconnect")
	flag.Float64Var(&o.drain, "drain", 5, "seconds to wait for outstanding deliveries")
	flag.IntVar(&o.batch, "batch", 500, "streams opened at a time before waiting for the server to count them")
	flag.Float64Var(&o.stall, "stall", 15, "give up opening streams after this many seconds without progress")
	flag.Float64Var(&o.deadline, "deadline", 300, "exit, whatever the state, after this many seconds")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: leave)")
	scaleFlags(&o)
	flag.Parse()
	if o.clock == "wall" {
		now = wallClock
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	go func() {
		time.Sleep(time.Duration(o.deadline * float64(time.Second)))
		say(`result {"timed_out": true}`)
		os.Exit(3)
	}()
	result := run(o)
	out, _ := json.Marshal(result)
	say("result " + string(out))
}

func run(o options) map[string]any {
	base := strings.TrimRight(o.base, "/")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &shared{}
	g.windowEnd.Store(math.MaxInt64)

	dialer := &net.Dialer{Timeout: 30 * time.Second}
	streamClient := &http.Client{Transport: &http.Transport{
		DialContext:         sourceDialer(o.sources, dialer),
		DisableCompression:  true,
		MaxIdleConnsPerHost: -1,
		ForceAttemptHTTP2:   false,
	}}
	controlClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:         dialer.DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: maxInt(o.publishers, o.pool) + 2,
	}}

	// Open the streams a batch at a time, waiting for the server to count each batch, so
	// that no listen backlog overflows (a dropped SYN costs a second or more).
	streams := make([]*stream, 0, o.streams)
	var wg sync.WaitGroup
	// The storm closes these first connections; every other mode ends them with ctx.
	firstCtx, dropFirst := context.WithCancel(ctx)
	defer dropFirst()
	url := base + o.eventsPath
	statsURL := base + o.statsPath
	t0 := time.Now()
	var subscribed int64
	stalled := ""
	for len(streams) < o.streams {
		n := o.batch
		if rest := o.streams - len(streams); rest < n {
			n = rest
		}
		for i := 0; i < n; i++ {
			s := &stream{}
			streams = append(streams, s)
			wg.Add(1)
			go runStream(firstCtx, streamClient, url, s, g, &wg)
		}
		target := int64(len(streams))
		last, lastChange := int64(-1), time.Now()
		for {
			c, err := counted(o, controlClient, statsURL)
			if c >= target {
				subscribed = c
				break
			}
			if c != last {
				last, lastChange = c, time.Now()
				if c >= 0 {
					subscribed = c
				}
			}
			if time.Since(lastChange).Seconds() > o.stall {
				stalled = fmt.Sprintf("the server counted %d streams of %d opened for %.0f s", c, target, o.stall)
				if err != nil {
					stalled += fmt.Sprintf(" (stats: %v)", err)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if stalled != "" {
			break
		}
	}
	if subscribed > int64(len(streams)) {
		subscribed = int64(len(streams))
	}
	connectSeconds := time.Since(t0).Seconds()
	say(fmt.Sprintf("connected %d %d %.3f", subscribed, len(streams), connectSeconds))

	// Wait for the harness to read memory and CPU.
	goCh := make(chan struct{})
	go func() {
		r := bufio.NewReader(os.Stdin)
		for {
			line, err := r.ReadString('\n')
			if strings.TrimSpace(line) == "go" || err != nil {
				close(goCh)
				return
			}
		}
	}()
	<-goCh

	seq := &atomic.Int64{}
	pub := &publisher{
		client: controlClient, url: base + o.publishPath, seq: seq,
		failedSeq: map[int64]bool{}, errors: map[string]int{},
	}
	say("window-start")
	windowStart := now()
	var windowEnd, lastPublish int64
	late, unissued := 0, 0
	var stormResult map[string]any
	switch o.mode {
	case "throughput":
		stop := windowStart + int64(o.duration*1e9)
		var pw sync.WaitGroup
		for i := 0; i < o.publishers; i++ {
			pw.Add(1)
			go func() {
				defer pw.Done()
				for now() < stop {
					pub.publish(now())
				}
			}()
		}
		pw.Wait()
		windowEnd = now()
		g.windowEnd.Store(windowEnd)
		lastPublish = windowEnd
		say("window-end")
	case "fanout":
		interval := int64(1e9 / o.rate)
		for i := 0; i < o.events && !o.listenOnly; i++ {
			due := windowStart + int64(i)*interval
			if wait := due - now(); wait > 0 {
				time.Sleep(time.Duration(wait))
			} else if wait < -interval/10 {
				late++
			}
			pub.publish(now())
		}
		lastPublish = now()
		if o.listenOnly {
			lastPublish = windowStart + int64(o.events-1)*interval
		}
	case "rate":
		interval := 1e9 / o.rate
		stop := windowStart + int64(o.duration*1e9)
		jobs := make(chan int64)
		var pw sync.WaitGroup
		var lateCount atomic.Int64
		for i := 0; i < o.pool; i++ {
			pw.Add(1)
			go func() {
				defer pw.Done()
				for due := range jobs {
					if now()-due > lateAfter {
						lateCount.Add(1)
					}
					pub.publish(due)
				}
			}()
		}
		for i := 0; ; i++ {
			due := windowStart + int64(float64(i)*interval)
			if due >= stop {
				break
			}
			if wait := due - now(); wait > 0 {
				time.Sleep(time.Duration(wait))
			}
			if now() >= stop {
				// Scheduled in the window, but no publisher was free before it ended.
				unissued = int((float64(stop-windowStart)+interval-1)/interval) - i
				break
			}
			jobs <- due
		}
		close(jobs)
		windowEnd = now()
		g.windowEnd.Store(windowEnd)
		say("window-end")
		pw.Wait()
		late = int(lateCount.Load()) + unissued
		lastPublish = now()
	case "storm":
		stormResult = storm(o, streams, pub, g, dropFirst, func(s *stream) {
			wg.Add(1)
			go runStream(ctx, streamClient, url, s, g, &wg)
		}, func() (int64, error) { return consumers(controlClient, statsURL) }, &wg)
		windowEnd = now()
		lastPublish = windowEnd
		say("window-end")
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", o.mode)
		os.Exit(2)
	}

	pub.mu.Lock()
	expected := pub.ok * subscribed
	pub.mu.Unlock()
	if stormResult != nil {
		expected = stormResult["expected"].(int64)
	}
	if o.listenOnly {
		expected = int64(o.events) * subscribed
	}
	drainStart := now()
	drainUntil := lastPublish + int64(o.drain*1e9)
	for g.received.Load() < expected && now() < drainUntil {
		time.Sleep(5 * time.Millisecond)
	}
	drained := float64(now()-drainStart) / 1e9
	if o.mode == "fanout" {
		windowEnd = now()
		g.windowEnd.Store(windowEnd)
		say("window-end")
	}
	cancel()

	// Stop the streams and add up.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	var received, duplicates, outOfOrder, unparsed, other, inWindow, headers int64
	var latencies []int64
	errs := map[string]int{}
	ended := 0
	for _, s := range streams {
		s.mu.Lock()
		received += s.received
		duplicates += s.duplicates
		outOfOrder += s.outOfOrder
		unparsed += s.unparsed
		other += s.otherEvents
		inWindow += s.inWindow
		latencies = append(latencies, s.latencies...)
		if s.headers {
			headers++
		}
		if s.ended {
			ended++
		}
		if s.err != "" && (len(errs) < 10 || errs[s.err] > 0) {
			errs[s.err]++
		}
		s.mu.Unlock()
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	window := float64(windowEnd-windowStart) / 1e9
	result := map[string]any{
		"mode":                 o.mode,
		"streams_requested":    o.streams,
		"streams_opened":       len(streams),
		"subscribed":           subscribed,
		"streams_with_headers": headers,
		"connect_seconds":      connectSeconds,
		"connect_stalled":      stalled,
		"stream_errors":        errs,
		"disconnects":          ended,
		"published":            pub.ok,
		"publish_failed":       pub.failed,
		"publish_errors":       pub.errors,
		"publish_rtt_ms":       summarize(pub.rtts),
		"publishes_late":       late,
		"publishes_unissued":   unissued,
		"expected":             expected,
		"received":             received,
		"lost":                 expected - received,
		"duplicates":           duplicates,
		"out_of_order":         outOfOrder,
		"unparsed":             unparsed,
		"other_events":         other,
		"window_seconds":       window,
		"drain_seconds":        drained,
		"deliveries_in_window": inWindow,
		"deliveries_per_second": func() float64 {
			if window <= 0 {
				return 0
			}
			return float64(inWindow) / window
		}(),
		"latency_ms": summarize(latencies),
	}
	if stormResult != nil {
		result["storm"] = stormResult
	}
	if o.latencies != "" {
		if problem := writeLatencies(o.latencies, latencies); problem != "" {
			result["latencies_error"] = problem
		}
	}
	return result
}

// storm runs the reconnect storm on streams that are open (see the storm mode) and returns
// its figures; "expected" is the deliveries every stream should have had: the first event,
// and with o.replay the missed ones too.
func storm(o options, streams []*stream, pub *publisher, g *shared, drop func(),
	reconnect func(*stream), stats func() (int64, error), wg *sync.WaitGroup) map[string]any {
	target := int64(0)
	for _, s := range streams {
		s.mu.Lock()
		if s.headers {
			target++
		}
		s.mu.Unlock()
	}
	pub.publish(now())
	until := now() + int64(o.drain*1e9)
	for g.received.Load() < target && now() < until {
		time.Sleep(5 * time.Millisecond)
	}
	// Only the streams that have the first event (and so an id) take part.
	var primed []*stream
	for _, s := range streams {
		s.mu.Lock()
		if s.received > 0 {
			primed = append(primed, s)
		}
		s.mu.Unlock()
	}

	drop()
	dropped := make(chan struct{})
	go func() { wg.Wait(); close(dropped) }()
	select {
	case <-dropped:
	case <-time.After(10 * time.Second):
	}
	pub.mu.Lock()
	okBefore := pub.ok
	pub.mu.Unlock()
	for i := 0; i < o.missed; i++ {
		pub.publish(now())
	}
	pub.mu.Lock()
	missed := pub.ok - okBefore
	pub.mu.Unlock()
	// Let the server notice that the streams are gone (some notice only when they write to
	// them), so that its count afterwards is the reconnected streams.
	releaseStart := now()
	stale, _ := stats()
	for stale != 0 && now()-releaseStart < 15e9 {
		time.Sleep(20 * time.Millisecond)
		stale, _ = stats()
	}
	released := float64(now()-releaseStart) / 1e9

	for _, s := range primed {
		s.mu.Lock()
		s.headers, s.headersAt, s.recoveredAt, s.want = false, 0, 0, missed
		s.mu.Unlock()
	}
	g.headers.Store(0)
	n := int64(len(primed))
	var counted atomic.Int64 // when the server's stats first counted every stream
	begin := now()
	for _, s := range primed {
		reconnect(s)
	}
	stopPolling := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if c, err := stats(); err == nil && c >= n {
				counted.Store(now())
				return
			}
			select {
			case <-stopPolling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	deadline := begin + int64(o.stormWait*1e9)
	recovered := func() int64 {
		var k int64
		for _, s := range primed {
			s.mu.Lock()
			if s.want == 0 {
				k++
			}
			s.mu.Unlock()
		}
		return k
	}
	for now() < deadline {
		if counted.Load() > 0 && g.headers.Load() >= n && (!o.replay || recovered() >= n) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stopPolling)
	<-polled

	var headersAt, recoveredAt []int64
	var lastHeaders, lastRecovered int64
	var lost, withLoss, withDuplicates int64
	for _, s := range primed {
		s.mu.Lock()
		if s.headers {
			headersAt = append(headersAt, s.headersAt-begin)
			lastHeaders = maxInt64(lastHeaders, s.headersAt-begin)
		}
		if s.want == 0 {
			recoveredAt = append(recoveredAt, s.recoveredAt-begin)
			lastRecovered = maxInt64(lastRecovered, s.recoveredAt-begin)
		} else {
			lost += s.want
			withLoss++
		}
		if s.duplicates > 0 {
			withDuplicates++
		}
		s.mu.Unlock()
	}
	seconds := func(at int64, complete bool) any {
		if !complete {
			return nil
		}
		return float64(at) / 1e9
	}
	expected := n
	if o.replay {
		expected += n * missed
	}
	return map[string]any{
		"streams":                n,
		"missed_published":       missed,
		"stale_after_drop":       stale,
		"release_seconds":        released,
		"reconnected":            len(headersAt),
		"recovered":              len(recoveredAt),
		"headers_seconds":        seconds(lastHeaders, int64(len(headersAt)) == n),
		"counted_seconds":        seconds(counted.Load()-begin, counted.Load() > 0),
		"recovered_seconds":      seconds(lastRecovered, int64(len(recoveredAt)) == n),
		"headers_ms":             summarize(headersAt),
		"recovered_ms":           summarize(recoveredAt),
		"missed_lost":            lost,
		"streams_with_loss":      withLoss,
		"streams_with_duplicate": withDuplicates,
		"expected":               expected,
	}
}

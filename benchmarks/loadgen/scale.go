// The scale rows: more streams than one process may open files for, or than one source
// address has ephemeral ports for, held by several load generator processes against
// several server workers.
//
// Each process dials from its own local addresses (-source 127.0.0.2,127.0.0.3), counts
// the streams the whole server holds from a Prometheus metric summed over its workers
// (-count-metric sse_streams_open, less -count-base opened by the processes before it),
// and only one of them publishes (-streams 0); the others listen (-listen-only). With
// -clock wall every process stamps sends and receipts with CLOCK_REALTIME, which all
// processes on one host share, so a receipt in one process minus a send time written by
// another is a latency; -latencies writes each process's to a file for the harness to
// merge.

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func scaleFlags(o *options) {
	flag.StringVar(&o.sources, "source", "", "comma-separated local IPs the streams dial from, in turn (default: the kernel's choice)")
	flag.StringVar(&o.clock, "clock", "monotonic", "monotonic, or wall: Unix nanoseconds, one clock for every process on the host")
	flag.StringVar(&o.countMetric, "count-metric", "", "count the server's streams from this metric of the Prometheus text at -stats-path, summed over its samples")
	flag.Int64Var(&o.countBase, "count-base", 0, "streams the server holds from other processes, subtracted from its count")
	flag.BoolVar(&o.listenOnly, "listen-only", false, "fanout: publish nothing and expect -events events from another process's publisher")
	flag.StringVar(&o.latencies, "latencies", "", "write every delivery's latency to this file, int64 nanoseconds little-endian")
}

// wallClock is CLOCK_REALTIME in nanoseconds.
func wallClock() int64 { return time.Now().UnixNano() }

// sourceDialer dials from each address of sources in turn, or as dialer does when sources
// is empty.
func sourceDialer(sources string, dialer *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
	if sources == "" {
		return dialer.DialContext
	}
	var dialers []*net.Dialer
	for _, ip := range strings.Split(sources, ",") {
		d := *dialer
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(strings.TrimSpace(ip))}
		dialers = append(dialers, &d)
	}
	var next atomic.Uint64
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return dialers[(next.Add(1)-1)%uint64(len(dialers))].DialContext(ctx, network, address)
	}
}

// counted is how many streams the server holds, less those of other processes.
func counted(o options, client *http.Client, url string) (int64, error) {
	var c int64
	var err error
	if o.countMetric == "" {
		c, err = consumers(client, url)
	} else {
		c, err = metric(client, url, o.countMetric)
	}
	if err != nil {
		return c, err
	}
	return c - o.countBase, nil
}

// metric sums the samples of name in the Prometheus text exposition at url.
func metric(client *http.Client, url, name string) (int64, error) {
	resp, err := client.Get(url)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	var total float64
	found := false
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) || (line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return -1, fmt.Errorf("%s: %q: %v", url, line, err)
		}
		total += v
		found = true
	}
	if !found {
		return -1, fmt.Errorf("%s has no metric %s", url, name)
	}
	return int64(total), lines.Err()
}

// writeLatencies writes ns to path and returns the error's text, or "".
func writeLatencies(path string, ns []int64) string {
	f, err := os.Create(path)
	if err != nil {
		return err.Error()
	}
	w := bufio.NewWriter(f)
	err = binary.Write(w, binary.LittleEndian, ns)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// Command goserver is the Go reference peer of the sse-flask benchmark: net/http, a
// mutex-guarded map of per-client buffered channels, one flush per event.
//
//	GET  /events  the stream: "retry:" first, then "id: N\ndata: <data>\n\n" per event,
//	              a ": heartbeat" comment after 15 s of idleness
//	POST /say     JSON {"data": <any JSON>}; a string is sent as is, anything else as its
//	              JSON text (the benchmark sends compact JSON objects)
//	GET  /stats   JSON {"consumers": n, "published": n, "dropped": n}
//
// A client whose buffer of 1000 events is full misses the event (counted in "dropped"),
// rather than delaying the publisher. Standard library only; built by the harness.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"
)

type broker struct {
	mu        sync.Mutex
	clients   map[chan []byte]struct{}
	seq       uint64
	published uint64
	dropped   uint64
}

var lineBreak = regexp.MustCompile("\r\n|\r|\n")

func (b *broker) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 1000)
	b.mu.Lock()
	b.clients[ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.clients, ch)
		b.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n\n")
	flusher.Flush()
	heartbeat := time.NewTicker(15 * time.Second)
	defer heartbeat.Stop()
	for {
		select {
		case frame := <-ch:
			if _, err := w.Write(frame); err != nil {
				return
			}
			flusher.Flush()
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (b *broker) say(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, `{"error": "POST JSON {\"data\": ...}"}`, http.StatusMethodNotAllowed)
		return
	}
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Data == nil {
		http.Error(w, `{"error": "the body must be JSON {\"data\": ...}"}`, http.StatusBadRequest)
		return
	}
	text := string(body.Data)
	var s string
	if json.Unmarshal(body.Data, &s) == nil {
		text = s
	}
	b.mu.Lock()
	b.seq++
	id := b.seq
	frame := []byte("id: " + strconv.FormatUint(id, 10) + "\n")
	for _, line := range lineBreak.Split(text, -1) {
		frame = append(frame, "data: "...)
		frame = append(frame, line...)
		frame = append(frame, '\n')
	}
	frame = append(frame, '\n')
	for ch := range b.clients {
		select {
		case ch <- frame:
		default:
			b.dropped++
		}
	}
	b.published++
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id": "%d"}`, id)
}

func (b *broker) stats(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	doc := map[string]uint64{"consumers": uint64(len(b.clients)), "published": b.published, "dropped": b.dropped}
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(doc)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	b := &broker{clients: map[chan []byte]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", b.events)
	mux.HandleFunc("/say", b.say)
	mux.HandleFunc("/stats", b.stats)
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

/*! sse-flask.js: the browser side of sse-flask. No dependencies, no build step.
 *
 *   var events = SSEFlask.connect({channels: ["orders"], json: true, onstate: show});
 *   events.on("order", function (order, event) { ... });    // typed handler, JSON parsed
 *   events.on("*", function (data, event) { ... });         // every event type
 *
 *   var answer = SSEFlask.stream("/ask", {method: "POST", body: {prompt: "hi"}, json: true});
 *   answer.on("message", function (word) { ... });           // a view's own stream (sse.stream)
 *
 * A job's stream (its channel starts with "job:") and a view's own stream end with their
 * `done`, `error` or `cancelled` event: state "closed", and no reconnection, which would
 * start the work again. A view's stream is not reopened after a drop either; a job's
 * stream resumes with Last-Event-ID until its end.
 *
 * Why not EventSource? It gives up for good when the server answers an error (a 503 when
 * a worker is full, a 500 from a proxy), it cannot tell why, it cannot see Retry-After,
 * and it drops events whose type nobody listened for in advance. This helper reads the
 * stream with fetch and parses it as the WHATWG standard says, reconnects itself with
 * jittered exponential backoff (never earlier than Retry-After), resumes with
 * Last-Event-ID, and tells the app when the server says events were `missed`.
 *
 * One stream for every tab: browsers open at most 6 HTTP/1.1 connections per origin, so a
 * 7th tab with its own stream hangs. Tabs of one origin listening to the same channels
 * share one stream: through a SharedWorker (this same file, run as a worker) where the
 * browser has them, else through a BroadcastChannel fed by one leader tab elected with the
 * Web Locks API (re-elected when it closes), else each tab has its own stream.
 */
(function (scope) {
  "use strict";

  // Bumped when the messages between tabs and the worker change, so that tabs running a
  // newer helper never talk to an older worker.
  var PROTOCOL = "sse-flask/1";
  var DEFAULTS = { retry: 1000, maxRetry: 30000, idleTimeout: 60000, json: false, share: "auto", withCredentials: false };
  var SEEN_IDS = 1000;
  // The events that end a job's or a view's stream.
  var FINAL = { done: true, error: true, cancelled: true };
  var PING_MS = 10000;

  // ---------------------------------------------------------------- the stream parser

  // The WHATWG "event stream interpretation", fed decoded text in chunks of any size.
  function Parser(lastEventId, dispatch, setRetry) {
    this.lastEventId = lastEventId || "";
    this.dispatch = dispatch;
    this.setRetry = setRetry;
    this.pending = "";
    this.skipLF = false;
    this.reset();
  }

  Parser.prototype.reset = function () {
    this.data = "";
    this.type = "";
    this.ownId = null;
  };

  Parser.prototype.feed = function (text) {
    if (!text) { return; }
    if (this.skipLF && text.charCodeAt(0) === 10) { text = text.slice(1); }
    this.skipLF = false;
    var buffer = this.pending + text;
    var start = 0;
    for (var i = 0; i < buffer.length; i++) {
      var code = buffer.charCodeAt(i);
      if (code !== 10 && code !== 13) { continue; }
      this.line(buffer.slice(start, i));
      if (code === 13) {
        // CRLF is one line break, even when CR ends this chunk and LF starts the next.
        if (i + 1 === buffer.length) { this.skipLF = true; } else if (buffer.charCodeAt(i + 1) === 10) { i++; }
      }
      start = i + 1;
    }
    this.pending = buffer.slice(start);
  };

  Parser.prototype.line = function (line) {
    if (line === "") { return this.end(); }
    if (line.charCodeAt(0) === 58) { return; }            // ":" starts a comment (heartbeats)
    var colon = line.indexOf(":");
    var field = colon < 0 ? line : line.slice(0, colon);
    var value = colon < 0 ? "" : line.slice(colon + (line.charAt(colon + 1) === " " ? 2 : 1));
    if (field === "data") {
      this.data += value + "\n";
    } else if (field === "event") {
      this.type = value;
    } else if (field === "id") {
      if (value.indexOf("\0") < 0) { this.lastEventId = this.ownId = value; }
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) { this.setRetry(parseInt(value, 10)); }
    }
  };

  Parser.prototype.end = function () {
    var event = null;
    if (this.data !== "") {
      event = { type: this.type || "message", data: this.data.slice(0, -1), id: this.ownId, lastEventId: this.lastEventId };
    }
    this.reset();
    this.dispatch(event, this.lastEventId);
  };

  // ---------------------------------------------------------------- one connection

  // The stream of one URL, reconnecting until closed. emit() receives
  // {kind: "state", state, detail} and {kind: "event", event}.
  function Stream(url, options, emit) {
    this.url = url;
    this.options = options;
    this.emit = emit;
    this.lastEventId = options.lastEventId || "";
    this.retry = options.retry;
    this.failures = 0;
    this.state = "";
    this.detail = {};
    this.closed = false;
    this.controller = null;
    this.timer = null;
    this.idleTimer = null;
    this.connect();
  }

  Stream.prototype.connect = function () {
    var self = this;
    this.timer = null;
    if (this.closed) { return; }
    this.setState(this.lastEventId || this.failures ? "reconnecting" : "connecting", { attempt: this.failures + 1 });
    var controller = this.controller = new AbortController();
    var url = this.url;
    var headers = Object.assign({}, this.options.headers, { Accept: "text/event-stream" });
    if (this.lastEventId) {
      // Same origin: the standard header. Another origin: the query parameter sse-flask
      // also reads, which spares a CORS preflight on every reconnection.
      if (new URL(url).origin === scope.location.origin) {
        headers["Last-Event-ID"] = this.lastEventId;
      } else {
        url += (url.indexOf("?") < 0 ? "?" : "&") + "lastEventId=" + encodeURIComponent(this.lastEventId);
      }
    }
    fetch(url, {
      method: this.options.method || "GET",
      body: this.options.body,
      headers: headers,
      cache: "no-store",
      credentials: this.options.withCredentials ? "include" : "same-origin",
      signal: controller.signal
    }).then(function (response) {
      if (controller !== self.controller) { return null; }
      var type = response.headers.get("Content-Type") || "";
      if (response.status === 204) {
        return self.fail({ status: 204, error: "the server asked the client not to reconnect (204 No Content)", fatal: true });
      }
      if (!response.ok || !/^text\/event-stream/i.test(type)) {
        return errorText(response).then(function (text) {
          var status = response.status;
          self.fail({
            status: status,
            error: response.ok ? "expected text/event-stream, got " + (type || "no Content-Type") : text,
            retryAfter: retryAfter(response.headers.get("Retry-After")),
            // A client error will not mend by itself; a server error or a limit may.
            fatal: status >= 400 && status < 500 && status !== 408 && status !== 429
          });
        });
      }
      self.failures = 0;
      self.setState("open", { status: response.status });
      return self.read(response.body.getReader(), controller);
    }).catch(function (error) {
      if (controller !== self.controller || self.closed) { return; }
      var aborted = error && error.name === "AbortError";
      var dropped = aborted && self.dropped;
      self.dropped = false;
      self.fail({
        error: dropped ? "the connection was cut by drop()"
          : aborted ? "no data from the server for too long"
          : "connection failed (" + (error && error.message || error) + ")"
      });
    });
  };

  Stream.prototype.read = function (reader, controller) {
    var self = this;
    var decoder = new TextDecoder();
    var parser = new Parser(this.lastEventId, function (event, lastEventId) {
      if (self.closed) { return; }
      self.lastEventId = lastEventId;
      if (!event) { return; }
      self.emit({ kind: "event", event: event });
      if (self.options.final && FINAL[event.type]) {
        self.close();
        self.setState("closed", { event: event.type, final: true });
      }
    }, function (retry) { self.retry = retry; });
    function pump() {
      self.watchIdle(controller);
      return reader.read().then(function (chunk) {
        if (controller !== self.controller) { return null; }
        if (chunk.done) {
          // The server ended the stream (a restart, a lifetime limit): resume after `retry`.
          clearTimeout(self.idleTimer);
          return self.fail({ error: "the server closed the stream" });
        }
        parser.feed(decoder.decode(chunk.value, { stream: true }));
        return pump();
      });
    }
    return pump();
  };

  // Abort a stream that sends nothing, not even a heartbeat, for options.idleTimeout ms.
  Stream.prototype.watchIdle = function (controller) {
    clearTimeout(this.idleTimer);
    if (this.options.idleTimeout > 0) {
      this.idleTimer = setTimeout(function () { controller.abort(); }, this.options.idleTimeout);
    }
  };

  Stream.prototype.fail = function (why) {
    clearTimeout(this.idleTimer);
    if (this.closed) { return; }
    if (why.fatal || this.options.once) {
      this.close();
      this.setState("closed", why);
      return;
    }
    var delay = this.delay(why.retryAfter);
    this.failures++;
    why.retryIn = delay;
    this.setState("reconnecting", why);
    this.timer = setTimeout(this.connect.bind(this), delay);
  };

  // Exponential backoff with jitter (half fixed, half random), from the server's `retry:`;
  // never sooner than Retry-After, plus up to a quarter more so that clients spread out.
  Stream.prototype.delay = function (retryAfterMs) {
    var ceiling = Math.min(this.options.maxRetry, Math.max(this.retry, 100) * Math.pow(2, this.failures));
    var delay = ceiling / 2 + Math.random() * ceiling / 2;
    if (retryAfterMs != null) { delay = Math.max(delay, retryAfterMs * (1 + Math.random() / 4)); }
    return Math.round(delay);
  };

  Stream.prototype.setState = function (state, detail) {
    this.state = state;
    this.detail = detail || {};
    this.emit({ kind: "state", state: state, detail: this.detail });
  };

  // Cut the connection as a network failure would: the stream reconnects and resumes.
  Stream.prototype.drop = function () {
    if (this.controller && this.state === "open") {
      this.dropped = true;
      this.controller.abort();
    }
  };

  Stream.prototype.close = function () {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.idleTimer);
    if (this.controller) { this.controller.abort(); }
    this.controller = null;
  };

  function retryAfter(value) {
    if (!value) { return null; }
    var ms = /^\s*[0-9]+\s*$/.test(value) ? parseInt(value, 10) * 1000 : Date.parse(value) - Date.now();
    return isNaN(ms) ? null : Math.max(0, ms);
  }

  // What an error answer says: sse-flask sends {"error": "..."}.
  function errorText(response) {
    var prefix = "HTTP " + response.status;
    return response.text().then(function (text) {
      try { return prefix + ": " + JSON.parse(text).error; } catch (e) { return prefix + (text ? ": " + text.slice(0, 200) : ""); }
    }, function () { return prefix; });
  }

  // ---------------------------------------------------------------- the shared worker

  function runWorker() {
    var streams = new Map();     // url -> {stream, ports: Map(port -> last time it answered)}

    scope.onconnect = function (connection) {
      var port = connection.ports[0];
      port.onmessage = function (message) { receive(port, message.data || {}); };
      port.start();
    };

    function receive(port, message) {
      if (message.op === "sub") {
        var entry = streams.get(message.url);
        if (!entry) {
          entry = { ports: new Map(), stream: null };
          streams.set(message.url, entry);
        }
        entry.ports.set(port, Date.now());
        if (!entry.stream || entry.stream.closed) {
          // The first tab, or the stream ended for good (a 403, say) and a tab asks again.
          entry.stream = new Stream(message.url, message.options, function (out) {
            entry.ports.forEach(function (seen, each) { each.postMessage(out); });
          });
        } else if (entry.stream.state) {
          port.postMessage({ kind: "state", state: entry.stream.state, detail: entry.stream.detail });
        }
      } else if (message.op === "unsub") {
        drop(port);                 // the tab may come back (from the back/forward cache)
      } else if (message.op === "pong") {
        streams.forEach(function (entry) { if (entry.ports.has(port)) { entry.ports.set(port, Date.now()); } });
      }
    }

    function drop(port) {
      streams.forEach(function (entry, url) {
        if (entry.ports.delete(port) && entry.ports.size === 0) {
          entry.stream.close();
          streams.delete(url);
        }
      });
    }

    // A tab that closed without saying so (a crash, a frozen page) stops answering pings:
    // its port is dropped, and the stream closed once nobody listens.
    setInterval(function () {
      var now = Date.now();
      streams.forEach(function (entry) {
        entry.ports.forEach(function (seen, port) {
          if (now - seen > 3 * PING_MS) { drop(port); } else { port.postMessage({ kind: "ping" }); }
        });
      });
    }, PING_MS);
  }

  // ---------------------------------------------------------------- the page side

  var scriptUrl = scope.document && scope.document.currentScript ? scope.document.currentScript.src : "";

  function connect(options) { return new Client(options || {}); }

  /**
   * A subscription to one or more channels; use SSEFlask.connect(options).
   *
   * Options: url (the stream, default "events" beside this script), channels (default
   * ["default"]), json (parse each event's data as JSON where it is JSON), onstate(state,
   * detail), onmissed(info, event), lastEventId (resume from), share ("auto", "worker",
   * "leader" or "none"), retry and maxRetry (backoff bounds, ms), idleTimeout (ms without
   * data, not even a heartbeat, after which the stream is reopened; 0 never),
   * withCredentials, workerUrl (where this file is, if not loaded by a script tag).
   * A client of job channels only ("job:...") ends at the job's done, error or cancelled.
   */
  function Client(options, request) {
    var opts = {};
    Object.keys(DEFAULTS).forEach(function (key) { opts[key] = key in options ? options[key] : DEFAULTS[key]; });
    this.options = opts;
    this.channels = uniqueSorted(options.channels && options.channels.length ? options.channels : ["default"]);
    this.view = !!options.view;
    this.url = this.view ? new URL(options.url, scope.location.href).href
      : streamUrl(options.url, this.channels);
    // A view's stream, or a job's: its last event ends it.
    this.final = this.view || this.channels.every(function (name) { return /^job:/.test(name); });
    this.state = "connecting";
    this.detail = {};
    this.mode = "";
    this.lastEventId = options.lastEventId || "";
    this.onstate = options.onstate || null;
    this.onmissed = options.onmissed || null;
    this.workerUrl = options.workerUrl || scriptUrl;
    this._handlers = Object.create(null);
    this._seen = new Map();
    this._closed = false;
    this._cleanup = [];
    this.request = request || null;
    this._start(opts.share);
  }

  Client.prototype.on = function (type, handler) {
    (this._handlers[type] = this._handlers[type] || []).push(handler);
    var self = this;
    return function () { self.off(type, handler); };
  };

  Client.prototype.off = function (type, handler) {
    var list = this._handlers[type] || [];
    var index = list.indexOf(handler);
    if (index >= 0) { list.splice(index, 1); }
  };

  Client.prototype.close = function () {
    if (this._closed) { return; }
    this._closed = true;
    this._cleanup.forEach(function (cleanup) { cleanup(); });
    this._setState("closed", { error: "closed by the page" });
  };

  // Cut the connection now, as a network failure would, to see the client resume: only
  // for a stream of this tab's own (share: "none").
  Client.prototype.drop = function () {
    if (!this._stream) {
      throw new Error("drop() needs a stream of this tab's own: connect with share: \"none\"");
    }
    this._stream.drop();
  };

  Client.prototype._start = function (share) {
    if (this.view) { return this._startDirect(); }       // a POST cannot be shared
    var canWorker = typeof SharedWorker === "function" && this.workerUrl;
    var canLeader = typeof BroadcastChannel === "function" && scope.navigator && scope.navigator.locks;
    if ((share === "auto" || share === "worker") && canWorker && this._startWorker()) { return; }
    if ((share === "auto" || share === "leader" || share === "worker") && canLeader) { return this._startLeader(); }
    this._startDirect();
  };

  Client.prototype._startDirect = function () {
    this._setMode("direct");
    var stream = new Stream(this.url, this._streamOptions(), this._receive.bind(this));
    this._stream = stream;
    this._cleanup.push(function () { stream.close(); });
  };

  Client.prototype._startWorker = function () {
    var self = this;
    var worker;
    try {
      worker = new SharedWorker(this.workerUrl, { name: PROTOCOL });
    } catch (e) {
      return false;                 // e.g. the script is on another origin
    }
    var port = worker.port;
    var subscribe = function () { port.postMessage({ op: "sub", url: self.url, options: self._streamOptions() }); };
    var unsubscribe = function () { port.postMessage({ op: "unsub" }); };
    // Leaving the page, or into the back/forward cache: leave the stream; back: rejoin.
    var onHide = function () { unsubscribe(); };
    var onShow = function (event) { if (event.persisted) { subscribe(); } };
    port.onmessage = function (message) {
      var data = message.data;
      if (data.kind === "ping") { port.postMessage({ op: "pong" }); } else { self._receive(data); }
    };
    worker.onerror = function () {
      // The worker could not run: share through a leader tab instead.
      if (self._closed || self.mode !== "worker") { return; }
      self._cleanup.forEach(function (cleanup) { cleanup(); });
      self._cleanup = [];
      self._start("leader");
    };
    port.start();
    subscribe();
    scope.addEventListener("pagehide", onHide);
    scope.addEventListener("pageshow", onShow);
    this._cleanup.push(function () {
      scope.removeEventListener("pagehide", onHide);
      scope.removeEventListener("pageshow", onShow);
      unsubscribe();
      port.close();
    });
    this._setMode("worker");
    return true;
  };

  Client.prototype._startLeader = function () {
    var self = this;
    var name = PROTOCOL + " " + this.url;
    var channel = new BroadcastChannel(name);
    var abort = new AbortController();
    var stream = null;
    var release = null;
    channel.onmessage = function (message) {
      var data = message.data;
      if (data.kind === "hello") {
        if (stream && stream.state) { channel.postMessage({ kind: "state", state: stream.state, detail: stream.detail }); }
      } else if (!stream) {
        self._receive(data);
      }
    };
    scope.navigator.locks.request(name, { signal: abort.signal }, function () {
      if (self._closed) { return null; }
      // Elected: open the stream from the last event this tab saw, so that nothing
      // published while the previous leader went away is lost.
      var options = self._streamOptions();
      options.lastEventId = self.lastEventId || options.lastEventId;
      self._setMode("leader");
      stream = new Stream(self.url, options, function (out) {
        channel.postMessage(out);
        self._receive(out);
        // Refused for good (a 403, say): let the next tab try; it will say the same, or not.
        if (out.kind === "state" && out.state === "closed" && release) { release(); }
      });
      return new Promise(function (resolve) { release = resolve; });
    }).catch(function () { /* aborted: this tab closed before it was elected */ });
    this._setMode("follower");
    channel.postMessage({ kind: "hello" });
    this._cleanup.push(function () {
      if (stream) { stream.close(); }
      if (release) { release(); }
      abort.abort();
      channel.close();
    });
  };

  Client.prototype._streamOptions = function () {
    var o = this.options;
    var options = {
      retry: o.retry, maxRetry: o.maxRetry, idleTimeout: o.idleTimeout,
      withCredentials: o.withCredentials, lastEventId: this.lastEventId, final: this.final
    };
    if (this.view) { Object.assign(options, this.request, { once: true }); }
    return options;
  };

  // A change of mode (a follower elected leader) always comes with a state from the stream.
  Client.prototype._setMode = function (mode) { this.mode = mode; };

  Client.prototype._setState = function (state, detail) {
    this.state = state;
    this.detail = detail || {};
    if (this.onstate) { this.onstate(state, this.detail); }
  };

  Client.prototype._receive = function (message) {
    if (this._closed) { return; }
    if (message.kind === "state") { this._setState(message.state, message.detail); }
    if (message.kind === "event") { this._dispatch(message.event); }
  };

  Client.prototype._dispatch = function (event) {
    // Ids are never reused, so an id seen already is a duplicate: the replay overlapping
    // what another tab already passed on, a leader resuming after a handover, a stream
    // resumed on another worker. `missed` is always passed on.
    if (event.id && event.type !== "missed") {
      if (this._seen.has(event.id)) { return; }
      this._seen.set(event.id, true);
      if (this._seen.size > SEEN_IDS) { this._seen.delete(this._seen.keys().next().value); }
    }
    if (event.lastEventId) { this.lastEventId = event.lastEventId; }
    var data = event.data;
    if (this.options.json || event.type === "missed") {
      try { data = JSON.parse(event.data); } catch (e) { data = event.data; }
    }
    if (event.type === "missed" && this.onmissed) { this.onmissed(data, event); }
    var self = this;
    (this._handlers[event.type] || []).concat(this._handlers["*"] || []).forEach(function (handler) {
      try {
        handler.call(self, data, event);
      } catch (error) {
        // One failing handler must not stop the others, nor the stream.
        setTimeout(function () { throw error; });
      }
    });
  };

  /**
   * A view's own stream (sse.stream on the server): one request, read until its done, error
   * or cancelled, never reopened (that would start the work again).
   *
   * Options: method (default "GET"), body (a plain object is sent as JSON), headers, and
   * json, onstate, idleTimeout and withCredentials as for connect().
   */
  function stream(url, options) {
    options = Object.assign({}, options || {}, { url: url, view: true, share: "none" });
    var body = options.body;
    var headers = Object.assign({}, options.headers);
    if (body != null && Object.getPrototypeOf(body) === Object.prototype) {
      body = JSON.stringify(body);
      headers["Content-Type"] = headers["Content-Type"] || "application/json";
    }
    return new Client(options, { method: options.method || "GET", body: body, headers: headers });
  }

  function uniqueSorted(channels) {
    return channels.filter(function (name, index) { return channels.indexOf(name) === index; }).sort();
  }

  function streamUrl(url, channels) {
    var base = scope.location.href;
    var absolute = new URL(url || (scriptUrl ? new URL("events", scriptUrl).href : "events"), base);
    channels.forEach(function (name) { absolute.searchParams.append("channel", name); });
    return absolute.href;
  }

  // ---------------------------------------------------------------- htmx

  var CONNECTING = 0, OPEN = 1, CLOSED = 2;

  /**
   * An EventSource look-alike over a shared Client, for libraries that open their own
   * EventSource: the channels come from the URL's ?channel= parameters. Events are passed
   * on as they arrive (data as text); a stream that is reconnecting reports an error with
   * readyState CONNECTING, as EventSource does, and one closed for good CLOSED.
   */
  function SharedEventSource(url, options) {
    var self = this;
    var absolute = new URL(url, scope.location.href);
    var channels = absolute.searchParams.getAll("channel");
    absolute.searchParams.delete("channel");
    var opts = {};
    Object.keys(options || {}).forEach(function (key) { opts[key] = options[key]; });
    opts.url = absolute.href;
    opts.channels = channels;
    opts.json = false;
    opts.onstate = function (state) { self._state(state); };
    this.url = url;
    this.withCredentials = !!opts.withCredentials;
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onerror = null;
    this._listeners = Object.create(null);
    this._client = connect(opts);
    this._client.on("*", function (data, event) {
      self._fire(event.type, { type: event.type, data: event.data, lastEventId: event.lastEventId || "", origin: absolute.origin });
    });
  }

  SharedEventSource.prototype.CONNECTING = SharedEventSource.CONNECTING = CONNECTING;
  SharedEventSource.prototype.OPEN = SharedEventSource.OPEN = OPEN;
  SharedEventSource.prototype.CLOSED = SharedEventSource.CLOSED = CLOSED;

  SharedEventSource.prototype.addEventListener = function (type, listener) {
    (this._listeners[type] = this._listeners[type] || []).push(listener);
  };

  SharedEventSource.prototype.removeEventListener = function (type, listener) {
    var list = this._listeners[type] || [];
    var index = list.indexOf(listener);
    if (index >= 0) { list.splice(index, 1); }
  };

  SharedEventSource.prototype.close = function () {
    this.readyState = CLOSED;
    this._client.close();
  };

  SharedEventSource.prototype._state = function (state) {
    if (state === "open" && this.readyState !== OPEN) {
      this.readyState = OPEN;
      this._fire("open", { type: "open" });
    } else if ((state === "reconnecting" || state === "closed") && this.readyState !== CLOSED) {
      this.readyState = state === "closed" ? CLOSED : CONNECTING;
      this._fire("error", { type: "error" });
    }
  };

  SharedEventSource.prototype._fire = function (type, event) {
    var handler = this["on" + type];
    var listeners = (this._listeners[type] || []).slice();
    if (typeof handler === "function" && (type === "open" || type === "error" || type === "message")) {
      listeners.unshift(handler);
    }
    var self = this;
    listeners.forEach(function (listener) {
      try { listener.call(self, event); } catch (error) { setTimeout(function () { throw error; }); }
    });
  };

  // Make htmx 2's SSE extension (htmx-ext-sse) open its streams through shared Clients,
  // so that every tab of the site holds one connection: SSEFlask.htmx(htmx, options).
  function useWithHtmx(htmx, options) {
    htmx.createEventSource = function (url) { return new SharedEventSource(url, options); };
  }

  var isWorker = typeof SharedWorkerGlobalScope === "function" && scope instanceof SharedWorkerGlobalScope;
  if (isWorker) {
    runWorker();
  } else {
    scope.SSEFlask = {
      connect: connect, stream: stream, Client: Client, Parser: Parser, version: PROTOCOL,
      EventSource: SharedEventSource, htmx: useWithHtmx
    };
  }
})(self);

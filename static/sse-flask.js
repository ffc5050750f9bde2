/*! sse-flask.js: the browser side of sse-flask. No dependencies, no build step.
 *
 *   const events = SSEFlask.connect({channels: ["orders"], json: true, onstate: show});
 *   events.on("order", (order, event) => { ... });    // typed handler, JSON parsed
 *   events.on("*", (data, event) => { ... });         // every event type
 *
 *   const answer = SSEFlask.stream("/ask", {method: "POST", body: {prompt: "hi"}, json: true});
 *   answer.on("message", (word) => { ... });           // a view's own stream (sse.stream)
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
 *
 * The types below are JSDoc, checked by `tsc --checkJs` (tests/tsconfig.json); the file
 * runs as it is.
 */

/**
 * A client's state: "connecting", "open", "reconnecting" or "closed" (for good).
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} State
 */

/**
 * What a state change says; each field only where it applies.
 * @typedef {object} StateDetail
 * @property {string} [error] why the stream is not open: the server's `{"error"}` message,
 *   or what failed
 * @property {number} [status] the HTTP status of the last answer
 * @property {number} [attempt] which attempt this connection is, from 1
 * @property {number} [retryIn] ms until the next attempt
 * @property {number | null} [retryAfter] what the server's Retry-After asked for, in ms
 * @property {boolean} [fatal] the server's answer will not mend by waiting
 * @property {string} [event] the event type that ended the stream
 * @property {boolean} [final] the stream ended with its last event
 */

/**
 * One event as the stream sent it; `data` is the raw text.
 * @typedef {object} ServerEvent
 * @property {string} type the event type ("message" when the stream named none)
 * @property {string} data
 * @property {string | null} id the event's own id, if it had one
 * @property {string} lastEventId the id to resume from after this event
 */

/**
 * A handler of on(): `data` is `JSON.parse(event.data)` with the `json` option (or for
 * `missed`) where it is JSON, else the text.
 * @callback Handler
 * @param {any} data
 * @param {ServerEvent} event
 * @returns {void}
 */

/**
 * How tabs share a stream: "auto" takes the first the browser has of "worker" (a
 * SharedWorker), "leader" (one tab elected with Web Locks, the others fed through a
 * BroadcastChannel); "none" gives each tab its own.
 * @typedef {"auto" | "worker" | "leader" | "none"} Share
 */

/**
 * The options of SSEFlask.connect().
 * @typedef {object} ConnectOptions
 * @property {string} [url] the stream, without `channel` parameters (default: "events"
 *   beside this script)
 * @property {string[]} [channels] the channels to listen to on one stream (default:
 *   ["default"]); a client of job channels only ("job:...") ends at the job's done, error
 *   or cancelled
 * @property {boolean} [json] pass handlers each event's data parsed as JSON where it is JSON
 *   (default: false)
 * @property {(state: State, detail: StateDetail) => void} [onstate] called on every state
 *   change
 * @property {(info: any, event: ServerEvent) => void} [onmissed] called on `event: missed`
 *   (the server could not replay everything), before its handlers
 * @property {string} [lastEventId] resume from this id
 * @property {Share} [share] how tabs share the stream (default: "auto")
 * @property {number} [retry] the first backoff in ms, until the server's `retry:` replaces
 *   it (default: 1000)
 * @property {number} [maxRetry] the longest backoff in ms (default: 30000)
 * @property {number} [idleTimeout] ms without data, not even a heartbeat, after which the
 *   stream is reopened; 0 never (default: 60000)
 * @property {boolean} [withCredentials] send cookies to another origin (default: false)
 * @property {string} [workerUrl] where this file is, if not loaded by a script tag
 */

/**
 * The options of SSEFlask.stream(), a view's own stream.
 * @typedef {object} ViewStreamOptions
 * @property {string} [method] default "GET"
 * @property {BodyInit | Record<string, unknown> | null} [body] a plain object is sent as JSON
 * @property {Record<string, string>} [headers]
 * @property {boolean} [json] as for connect()
 * @property {(state: State, detail: StateDetail) => void} [onstate] as for connect()
 * @property {number} [idleTimeout] as for connect()
 * @property {boolean} [withCredentials] as for connect()
 */

/**
 * The options of SSEFlask.EventSource, and of SSEFlask.htmx: connect()'s, less the ones it
 * sets itself (url, channels, json, onstate).
 * @typedef {Omit<ConnectOptions, "url" | "channels" | "json" | "onstate">} EventSourceOptions
 */

((/** @type {Window & typeof globalThis} */ scope) => {
  "use strict";

  // Bumped when the messages between tabs and the worker change, so that tabs running a
  // newer helper never talk to an older worker.
  const PROTOCOL = "sse-flask/1";
  /**
   * @typedef {object} Settings connect()'s options that have a default
   * @property {number} retry
   * @property {number} maxRetry
   * @property {number} idleTimeout
   * @property {boolean} json
   * @property {Share} share
   * @property {boolean} withCredentials
   */
  /** @type {Settings} */
  const DEFAULTS = {
    retry: 1000,
    maxRetry: 30000,
    idleTimeout: 60000,
    json: false,
    share: "auto",
    withCredentials: false,
  };
  const SEEN_IDS = 1000;
  // The events that end a job's or a view's stream.
  const FINAL = new Set(["done", "error", "cancelled"]);
  const PING_MS = 10000;

  /**
   * The options of one Stream: sent to the worker as they are (message "sub").
   * @typedef {object} StreamOptions
   * @property {number} retry
   * @property {number} maxRetry
   * @property {number} idleTimeout
   * @property {boolean} withCredentials
   * @property {string} lastEventId
   * @property {boolean} final whether the stream ends at its done, error or cancelled event
   * @property {boolean} [once] a view's stream: never reopened
   * @property {string} [method]
   * @property {BodyInit | null} [body]
   * @property {Record<string, string>} [headers]
   */

  /**
   * What a Stream emits, and what the worker and a leader tab pass on to tabs.
   * @typedef {{kind: "state", state: State, detail: StateDetail}
   *   | {kind: "event", event: ServerEvent}} StreamMessage
   */

  /**
   * The messages of PROTOCOL: a tab to the worker (TabMessage), the worker to a tab
   * (WorkerMessage), and between the tabs of a leader (LeaderMessage).
   * @typedef {{op: "sub", url: string, options: StreamOptions} | {op: "unsub"} | {op: "pong"}}
   *   TabMessage
   * @typedef {StreamMessage | {kind: "ping"}} WorkerMessage
   * @typedef {StreamMessage | {kind: "hello"}} LeaderMessage
   */

  // ---------------------------------------------------------------- the stream parser

  /** The WHATWG "event stream interpretation", fed decoded text in chunks of any size. */
  class Parser {
    // The event being read, until a blank line dispatches it and reset() starts the next.
    data = "";
    type = "";
    /** @type {string | null} */
    ownId = null;

    /**
     * @param {string | null | undefined} lastEventId the id to start from
     * @param {(event: ServerEvent | null, lastEventId: string) => void} dispatch called at
     *   each blank line, with the event, or null when it had no data
     * @param {(retry: number) => void} setRetry called with each valid `retry:`
     */
    constructor(lastEventId, dispatch, setRetry) {
      this.lastEventId = lastEventId || "";
      this.dispatch = dispatch;
      this.setRetry = setRetry;
      this.pending = "";
      this.skipLF = false;
    }

    reset() {
      this.data = "";
      this.type = "";
      this.ownId = null;
    }

    /** @param {string} text */
    feed(text) {
      if (!text) { return; }
      if (this.skipLF && text.charCodeAt(0) === 10) { text = text.slice(1); }
      this.skipLF = false;
      const buffer = this.pending + text;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const code = buffer.charCodeAt(i);
        if (code !== 10 && code !== 13) { continue; }
        this.line(buffer.slice(start, i));
        if (code === 13) {
          // CRLF is one line break, even when CR ends this chunk and LF starts the next.
          if (i + 1 === buffer.length) {
            this.skipLF = true;
          } else if (buffer.charCodeAt(i + 1) === 10) {
            i++;
          }
        }
        start = i + 1;
      }
      this.pending = buffer.slice(start);
    }

    /** @param {string} line */
    line(line) {
      if (line === "") {
        this.end();
        return;
      }
      if (line.charCodeAt(0) === 58) {
        return; // ":" starts a comment (heartbeats)
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + (line.charAt(colon + 1) === " " ? 2 : 1));
      if (field === "data") {
        this.data += value + "\n";
      } else if (field === "event") {
        this.type = value;
      } else if (field === "id") {
        if (!value.includes("\0")) { this.lastEventId = this.ownId = value; }
      } else if (field === "retry") {
        if (/^[0-9]+$/.test(value)) { this.setRetry(parseInt(value, 10)); }
      }
    }

    end() {
      /** @type {ServerEvent | null} */
      let event = null;
      if (this.data !== "") {
        event = {
          type: this.type || "message",
          data: this.data.slice(0, -1),
          id: this.ownId,
          lastEventId: this.lastEventId,
        };
      }
      this.reset();
      this.dispatch(event, this.lastEventId);
    }
  }

  // ---------------------------------------------------------------- one connection

  /** The stream of one URL, reconnecting until closed; emit() receives what it says. */
  class Stream {
    /**
     * @param {string} url
     * @param {StreamOptions} options
     * @param {(message: StreamMessage) => void} emit
     */
    constructor(url, options, emit) {
      this.url = url;
      this.options = options;
      this.emit = emit;
      this.lastEventId = options.lastEventId || "";
      this.retry = options.retry;
      this.failures = 0;
      /** @type {State | ""} */
      this.state = "";
      /** @type {StateDetail} */
      this.detail = {};
      this.closed = false;
      this.dropped = false;
      /** @type {AbortController | null} */
      this.controller = null;
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      this.timer = undefined;
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      this.idleTimer = undefined;
      this.connect();
    }

    connect() {
      this.timer = undefined;
      if (this.closed) { return; }
      this.setState(this.lastEventId || this.failures ? "reconnecting" : "connecting", {
        attempt: this.failures + 1,
      });
      const controller = (this.controller = new AbortController());
      let url = this.url;
      /** @type {Record<string, string>} */
      const headers = { ...this.options.headers, Accept: "text/event-stream" };
      if (this.lastEventId) {
        // Same origin: the standard header. Another origin: the query parameter sse-flask
        // also reads, which spares a CORS preflight on every reconnection.
        if (new URL(url).origin === scope.location.origin) {
          headers["Last-Event-ID"] = this.lastEventId;
        } else {
          const resume = `lastEventId=${encodeURIComponent(this.lastEventId)}`;
          url += (url.includes("?") ? "&" : "?") + resume;
        }
      }
      this.#open(url, headers, controller);
    }

    /**
     * Request the stream and read it to its end; a failure of any step is one of the stream.
     * @param {string} url
     * @param {Record<string, string>} headers
     * @param {AbortController} controller this connection's, to tell whether it is still
     *   the stream's
     */
    async #open(url, headers, controller) {
      try {
        const response = await fetch(url, {
          method: this.options.method || "GET",
          body: this.options.body ?? null,
          headers,
          cache: "no-store",
          credentials: this.options.withCredentials ? "include" : "same-origin",
          signal: controller.signal,
        });
        if (controller !== this.controller) { return; }
        const type = response.headers.get("Content-Type") || "";
        if (response.status === 204) {
          this.fail({
            status: 204,
            error: "the server asked the client not to reconnect (204 No Content)",
            fatal: true,
          });
          return;
        }
        if (!response.ok || !/^text\/event-stream/i.test(type)) {
          const text = await errorText(response);
          const status = response.status;
          this.fail({
            status,
            error: response.ok
              ? `expected text/event-stream, got ${type || "no Content-Type"}`
              : text,
            retryAfter: retryAfter(response.headers.get("Retry-After")),
            // A client error will not mend by itself; a server error or a limit may.
            fatal: status >= 400 && status < 500 && status !== 408 && status !== 429,
          });
          return;
        }
        this.failures = 0;
        this.setState("open", { status: response.status });
        const body = /** @type {ReadableStream<Uint8Array>} */ (response.body);
        await this.read(body.getReader(), controller);
      } catch (error) {
        if (controller !== this.controller || this.closed) { return; }
        const failure = /** @type {{name?: string, message?: string} | null | undefined} */ (error);
        const aborted = failure?.name === "AbortError";
        const dropped = aborted && this.dropped;
        this.dropped = false;
        this.fail({
          error: dropped
            ? "the connection was cut by drop()"
            : aborted
              ? "no data from the server for too long"
              : `connection failed (${failure?.message || error})`,
        });
      }
    }

    /**
     * @param {ReadableStreamDefaultReader<Uint8Array>} reader
     * @param {AbortController} controller
     */
    async read(reader, controller) {
      const decoder = new TextDecoder();
      const parser = new Parser(
        this.lastEventId,
        (event, lastEventId) => {
          if (this.closed) { return; }
          this.lastEventId = lastEventId;
          if (!event) { return; }
          this.emit({ kind: "event", event });
          if (this.options.final && FINAL.has(event.type)) {
            this.close();
            this.setState("closed", { event: event.type, final: true });
          }
        },
        (retry) => {
          this.retry = retry;
        },
      );
      for (;;) {
        this.watchIdle(controller);
        const chunk = await reader.read();
        if (controller !== this.controller) { return; }
        if (chunk.done) {
          // The server ended the stream (a restart, a lifetime limit): resume after `retry`.
          clearTimeout(this.idleTimer);
          this.fail({ error: "the server closed the stream" });
          return;
        }
        parser.feed(decoder.decode(chunk.value, { stream: true }));
      }
    }

    /**
     * Abort a stream that sends nothing, not even a heartbeat, for options.idleTimeout ms.
     * @param {AbortController} controller
     */
    watchIdle(controller) {
      clearTimeout(this.idleTimer);
      if (this.options.idleTimeout > 0) {
        this.idleTimer = setTimeout(() => controller.abort(), this.options.idleTimeout);
      }
    }

    /** @param {StateDetail} why */
    fail(why) {
      clearTimeout(this.idleTimer);
      if (this.closed) { return; }
      if (why.fatal || this.options.once) {
        this.close();
        this.setState("closed", why);
        return;
      }
      const delay = this.delay(why.retryAfter);
      this.failures++;
      why.retryIn = delay;
      this.setState("reconnecting", why);
      this.timer = setTimeout(() => this.connect(), delay);
    }

    /**
     * Exponential backoff with jitter (half fixed, half random), from the server's `retry:`;
     * never sooner than Retry-After, plus up to a quarter more so that clients spread out.
     * @param {number | null | undefined} retryAfterMs
     * @returns {number} ms
     */
    delay(retryAfterMs) {
      const ceiling = Math.min(
        this.options.maxRetry,
        Math.max(this.retry, 100) * 2 ** this.failures,
      );
      let delay = ceiling / 2 + (Math.random() * ceiling) / 2;
      if (retryAfterMs != null) { delay = Math.max(delay, retryAfterMs * (1 + Math.random() / 4)); }
      return Math.round(delay);
    }

    /**
     * @param {State} state
     * @param {StateDetail} [detail]
     */
    setState(state, detail) {
      this.state = state;
      this.detail = detail || {};
      this.emit({ kind: "state", state, detail: this.detail });
    }

    /** Cut the connection as a network failure would: the stream reconnects and resumes. */
    drop() {
      if (this.controller && this.state === "open") {
        this.dropped = true;
        this.controller.abort();
      }
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      clearTimeout(this.idleTimer);
      if (this.controller) { this.controller.abort(); }
      this.controller = null;
    }
  }

  /**
   * @param {string | null} value a Retry-After header: seconds, or an HTTP date
   * @returns {number | null} ms from now
   */
  function retryAfter(value) {
    if (!value) { return null; }
    const ms = /^\s*[0-9]+\s*$/.test(value)
      ? parseInt(value, 10) * 1000
      : Date.parse(value) - Date.now();
    return isNaN(ms) ? null : Math.max(0, ms);
  }

  /**
   * What an error answer says: sse-flask sends {"error": "..."}.
   * @param {Response} response
   * @returns {Promise<string>}
   */
  async function errorText(response) {
    const prefix = `HTTP ${response.status}`;
    let text;
    try {
      text = await response.text();
    } catch {
      return prefix;
    }
    try {
      return `${prefix}: ${JSON.parse(text).error}`;
    } catch {
      return prefix + (text ? `: ${text.slice(0, 200)}` : "");
    }
  }

  // ---------------------------------------------------------------- the shared worker

  function runWorker() {
    const worker = /** @type {SharedWorkerGlobalScope} */ (/** @type {unknown} */ (scope));
    /** @type {Map<string, {stream: Stream | null, ports: Map<MessagePort, number>}>} */
    const streams = new Map(); // url -> the stream, and each port with when it last answered

    worker.onconnect = (connection) => {
      const port = /** @type {MessagePort} */ (connection.ports[0]);
      port.onmessage = (message) => receive(port, message.data || {});
      port.start();
    };

    /**
     * @param {MessagePort} port
     * @param {TabMessage} message
     */
    function receive(port, message) {
      if (message.op === "sub") {
        let entry = streams.get(message.url);
        if (!entry) {
          entry = { ports: new Map(), stream: null };
          streams.set(message.url, entry);
        }
        const { ports } = entry;
        ports.set(port, Date.now());
        if (!entry.stream || entry.stream.closed) {
          // The first tab, or the stream ended for good (a 403, say) and a tab asks again.
          entry.stream = new Stream(message.url, message.options, (out) => {
            ports.forEach((_seen, each) => each.postMessage(out));
          });
        } else if (entry.stream.state) {
          const { state, detail } = entry.stream;
          port.postMessage({ kind: "state", state, detail });
        }
      } else if (message.op === "unsub") {
        drop(port); // the tab may come back (from the back/forward cache)
      } else if (message.op === "pong") {
        streams.forEach((entry) => {
          if (entry.ports.has(port)) { entry.ports.set(port, Date.now()); }
        });
      }
    }

    /** @param {MessagePort} port */
    function drop(port) {
      streams.forEach((entry, url) => {
        if (entry.ports.delete(port) && entry.ports.size === 0) {
          entry.stream?.close();
          streams.delete(url);
        }
      });
    }

    // A tab that closed without saying so (a crash, a frozen page) stops answering pings:
    // its port is dropped, and the stream closed once nobody listens.
    setInterval(() => {
      const now = Date.now();
      streams.forEach((entry) => {
        entry.ports.forEach((seen, port) => {
          if (now - seen > 3 * PING_MS) {
            drop(port);
          } else {
            port.postMessage({ kind: "ping" });
          }
        });
      });
    }, PING_MS);
  }

  // ---------------------------------------------------------------- the page side

  const script = /** @type {HTMLScriptElement | null | undefined} */ (
    scope.document?.currentScript
  );
  const scriptUrl = script ? script.src : "";

  /**
   * Subscribe to one or more channels.
   * @param {ConnectOptions} [options]
   * @returns {Client}
   */
  function connect(options) {
    return new Client(options || {});
  }

  /**
   * connect()'s options, and whether it is a view's own stream.
   * @typedef {ConnectOptions & {view?: boolean}} ClientOptions
   */

  /**
   * The request that opens a view's own stream.
   * @typedef {{method: string, body: BodyInit | null | undefined, headers: Record<string, string>}}
   *   ViewRequest
   */

  /** A subscription to one or more channels; use SSEFlask.connect(options). */
  class Client {
    /** @type {Map<string, Handler[]>} */
    #handlers = new Map();
    /** @type {Set<string>} */
    #seen = new Set();
    #closed = false;
    /** @type {(() => void)[]} */
    #cleanup = [];
    /** @type {Stream | null} */
    #stream = null;

    /**
     * @param {ClientOptions} options
     * @param {ViewRequest | null} [request] a view's stream: how to ask for it
     */
    constructor(options, request) {
      const given = /** @type {Record<string, unknown>} */ (options);
      /** @type {Settings} */
      this.options = /** @type {Settings} */ (
        Object.fromEntries(
          Object.entries(DEFAULTS).map(([key, value]) => [key, key in given ? given[key] : value]),
        )
      );
      this.channels = uniqueSorted(options.channels?.length ? options.channels : ["default"]);
      this.view = !!options.view;
      this.url = this.view
        ? new URL(/** @type {string} */ (options.url), scope.location.href).href
        : streamUrl(options.url, this.channels);
      // A view's stream, or a job's: its last event ends it.
      this.final = this.view || this.channels.every((name) => /^job:/.test(name));
      /** @type {State} */
      this.state = "connecting";
      /** @type {StateDetail} */
      this.detail = {};
      /** @type {"" | "direct" | "worker" | "leader" | "follower"} */
      this.mode = "";
      this.lastEventId = options.lastEventId || "";
      this.onstate = options.onstate || null;
      this.onmissed = options.onmissed || null;
      this.workerUrl = options.workerUrl || scriptUrl;
      this.request = request || null;
      this.#start(this.options.share);
    }

    /**
     * Call handler with each event of this type ("*": every type).
     * @param {string} type
     * @param {Handler} handler
     * @returns {() => void} what removes the handler
     */
    on(type, handler) {
      let list = this.#handlers.get(type);
      if (!list) { this.#handlers.set(type, (list = [])); }
      list.push(handler);
      return () => this.off(type, handler);
    }

    /**
     * @param {string} type
     * @param {Handler} handler
     */
    off(type, handler) {
      const list = this.#handlers.get(type) || [];
      const index = list.indexOf(handler);
      if (index >= 0) { list.splice(index, 1); }
    }

    /** End this page's subscription: state "closed". */
    close() {
      if (this.#closed) { return; }
      this.#closed = true;
      this.#cleanup.forEach((cleanup) => cleanup());
      this.#setState("closed", { error: "closed by the page" });
    }

    /**
     * Cut the connection now, as a network failure would, to see the client resume: only
     * for a stream of this tab's own (share: "none").
     */
    drop() {
      if (!this.#stream) {
        throw new Error('drop() needs a stream of this tab\'s own: connect with share: "none"');
      }
      this.#stream.drop();
    }

    /** @param {Share} share */
    #start(share) {
      if (this.view) {
        this.#startDirect(); // a POST cannot be shared
        return;
      }
      const canWorker = typeof SharedWorker === "function" && this.workerUrl;
      const canLeader = typeof BroadcastChannel === "function" && scope.navigator?.locks;
      if ((share === "auto" || share === "worker") && canWorker && this.#startWorker()) { return; }
      if ((share === "auto" || share === "leader" || share === "worker") && canLeader) {
        this.#startLeader();
        return;
      }
      this.#startDirect();
    }

    #startDirect() {
      this.#setMode("direct");
      const stream = new Stream(this.url, this.#streamOptions(), (out) => this.#receive(out));
      this.#stream = stream;
      this.#cleanup.push(() => stream.close());
    }

    /** @returns {boolean} whether the worker took the subscription */
    #startWorker() {
      let worker;
      try {
        worker = new SharedWorker(this.workerUrl, { name: PROTOCOL });
      } catch {
        return false; // e.g. the script is on another origin
      }
      const port = worker.port;
      /** @param {TabMessage} message */
      const tell = (message) => port.postMessage(message);
      const subscribe = () => tell({ op: "sub", url: this.url, options: this.#streamOptions() });
      const unsubscribe = () => tell({ op: "unsub" });
      // Leaving the page, or into the back/forward cache: leave the stream; back: rejoin.
      const onHide = () => unsubscribe();
      /** @param {PageTransitionEvent} event */
      const onShow = (event) => {
        if (event.persisted) { subscribe(); }
      };
      port.onmessage = (/** @type {MessageEvent<WorkerMessage>} */ message) => {
        const data = message.data;
        if (data.kind === "ping") {
          tell({ op: "pong" });
        } else {
          this.#receive(data);
        }
      };
      worker.onerror = () => {
        // The worker could not run: share through a leader tab instead.
        if (this.#closed || this.mode !== "worker") { return; }
        this.#cleanup.forEach((cleanup) => cleanup());
        this.#cleanup = [];
        this.#start("leader");
      };
      port.start();
      subscribe();
      scope.addEventListener("pagehide", onHide);
      scope.addEventListener("pageshow", onShow);
      this.#cleanup.push(() => {
        scope.removeEventListener("pagehide", onHide);
        scope.removeEventListener("pageshow", onShow);
        unsubscribe();
        port.close();
      });
      this.#setMode("worker");
      return true;
    }

    #startLeader() {
      const name = `${PROTOCOL} ${this.url}`;
      const channel = new BroadcastChannel(name);
      /** @param {LeaderMessage} message */
      const tell = (message) => channel.postMessage(message);
      const abort = new AbortController();
      /** @type {Stream | null} */
      let stream = null;
      /** @type {(() => void) | null} */
      let release = null;
      channel.onmessage = (/** @type {MessageEvent<LeaderMessage>} */ message) => {
        const data = message.data;
        if (data.kind === "hello") {
          if (stream && stream.state) {
            tell({ kind: "state", state: stream.state, detail: stream.detail });
          }
        } else if (!stream) {
          this.#receive(data);
        }
      };
      scope.navigator.locks
        .request(name, { signal: abort.signal }, () => {
          if (this.#closed) { return null; }
          // Elected: open the stream from the last event this tab saw, so that nothing
          // published while the previous leader went away is lost.
          const options = this.#streamOptions();
          options.lastEventId = this.lastEventId || options.lastEventId;
          this.#setMode("leader");
          stream = new Stream(this.url, options, (out) => {
            tell(out);
            this.#receive(out);
            // Refused for good (a 403, say): let the next tab try; it will say the same, or not.
            if (out.kind === "state" && out.state === "closed" && release) { release(); }
          });
          /** @type {Promise<void>} the lock is held until release() settles it */
          const held = new Promise((resolve) => {
            release = resolve;
          });
          return held;
        })
        .catch(() => {
          // Aborted: this tab closed before it was elected.
        });
      this.#setMode("follower");
      tell({ kind: "hello" });
      this.#cleanup.push(() => {
        if (stream) { stream.close(); }
        if (release) { release(); }
        abort.abort();
        channel.close();
      });
    }

    /** @returns {StreamOptions} */
    #streamOptions() {
      const o = this.options;
      /** @type {StreamOptions} */
      const options = {
        retry: o.retry,
        maxRetry: o.maxRetry,
        idleTimeout: o.idleTimeout,
        withCredentials: o.withCredentials,
        lastEventId: this.lastEventId,
        final: this.final,
      };
      if (this.view) { Object.assign(options, this.request, { once: true }); }
      return options;
    }

    /**
     * A change of mode (a follower elected leader) always comes with a state from the stream.
     * @param {Client["mode"]} mode
     */
    #setMode(mode) {
      this.mode = mode;
    }

    /**
     * @param {State} state
     * @param {StateDetail} [detail]
     */
    #setState(state, detail) {
      this.state = state;
      this.detail = detail || {};
      if (this.onstate) { this.onstate(state, this.detail); }
    }

    /** @param {StreamMessage} message */
    #receive(message) {
      if (this.#closed) { return; }
      if (message.kind === "state") { this.#setState(message.state, message.detail); }
      if (message.kind === "event") { this.#dispatch(message.event); }
    }

    /** @param {ServerEvent} event */
    #dispatch(event) {
      // Ids are never reused, so an id seen already is a duplicate: the replay overlapping
      // what another tab already passed on, a leader resuming after a handover, a stream
      // resumed on another worker. `missed` is always passed on.
      if (event.id && event.type !== "missed") {
        if (this.#seen.has(event.id)) { return; }
        this.#seen.add(event.id);
        if (this.#seen.size > SEEN_IDS) {
          this.#seen.delete(/** @type {string} */ (this.#seen.values().next().value));
        }
      }
      if (event.lastEventId) { this.lastEventId = event.lastEventId; }
      /** @type {any} */
      let data = event.data;
      if (this.options.json || event.type === "missed") {
        try {
          data = JSON.parse(event.data);
        } catch {
          data = event.data;
        }
      }
      if (event.type === "missed" && this.onmissed) { this.onmissed(data, event); }
      const handlers = [
        ...(this.#handlers.get(event.type) || []),
        ...(this.#handlers.get("*") || []),
      ];
      handlers.forEach((handler) => {
        try {
          handler.call(this, data, event);
        } catch (error) {
          // One failing handler must not stop the others, nor the stream.
          setTimeout(() => {
            throw error;
          });
        }
      });
    }
  }

  /**
   * A view's own stream (sse.stream on the server): one request, read until its done, error
   * or cancelled, never reopened (that would start the work again).
   * @param {string} url
   * @param {ViewStreamOptions} [options]
   * @returns {Client}
   */
  function stream(url, options) {
    const opts = { ...options, url, view: true, share: /** @type {const} */ ("none") };
    let body = opts.body;
    /** @type {Record<string, string>} */
    const headers = { ...opts.headers };
    if (body != null && Object.getPrototypeOf(body) === Object.prototype) {
      body = JSON.stringify(body);
      headers["Content-Type"] = headers["Content-Type"] || "application/json";
    }
    return new Client(opts, {
      method: opts.method || "GET",
      body: /** @type {BodyInit | null | undefined} */ (body),
      headers,
    });
  }

  /**
   * @param {string[]} channels
   * @returns {string[]}
   */
  function uniqueSorted(channels) {
    return channels.filter((name, index) => channels.indexOf(name) === index).sort();
  }

  /**
   * @param {string | undefined} url
   * @param {string[]} channels
   * @returns {string} the absolute URL with a `channel` parameter for each channel
   */
  function streamUrl(url, channels) {
    const base = scope.location.href;
    const beside = scriptUrl ? new URL("events", scriptUrl).href : "events";
    const absolute = new URL(url || beside, base);
    channels.forEach((name) => absolute.searchParams.append("channel", name));
    return absolute.href;
  }

  // ---------------------------------------------------------------- htmx

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSED = 2;

  /**
   * What SharedEventSource passes to its listeners: the shape of a MessageEvent's fields.
   * @typedef {{type: string, data?: string, lastEventId?: string, origin?: string}} SourceEvent
   * @typedef {(this: SharedEventSource, event: SourceEvent) => void} SourceListener
   */

  /**
   * An EventSource look-alike over a shared Client, for libraries that open their own
   * EventSource: the channels come from the URL's ?channel= parameters. Events are passed
   * on as they arrive (data as text); a stream that is reconnecting reports an error with
   * readyState CONNECTING, as EventSource does, and one closed for good CLOSED.
   */
  class SharedEventSource {
    static CONNECTING = CONNECTING;
    static OPEN = OPEN;
    static CLOSED = CLOSED;

    /** @type {Map<string, SourceListener[]>} */
    #listeners = new Map();
    /** @type {Client} */
    #client;

    /**
     * @param {string} url
     * @param {EventSourceOptions} [options]
     */
    constructor(url, options) {
      const absolute = new URL(url, scope.location.href);
      const channels = absolute.searchParams.getAll("channel");
      absolute.searchParams.delete("channel");
      /** @type {ConnectOptions} */
      const opts = {
        ...options,
        url: absolute.href,
        channels,
        json: false,
        onstate: (state) => this.#state(state),
      };
      this.url = url;
      this.withCredentials = !!opts.withCredentials;
      /** @type {number} */
      this.readyState = CONNECTING;
      /** @type {SourceListener | null} */
      this.onopen = null;
      /** @type {SourceListener | null} */
      this.onmessage = null;
      /** @type {SourceListener | null} */
      this.onerror = null;
      this.#client = connect(opts);
      this.#client.on("*", (_data, event) => {
        this.#fire(event.type, {
          type: event.type,
          data: event.data,
          lastEventId: event.lastEventId || "",
          origin: absolute.origin,
        });
      });
    }

    get CONNECTING() {
      return CONNECTING;
    }

    get OPEN() {
      return OPEN;
    }

    get CLOSED() {
      return CLOSED;
    }

    /**
     * @param {string} type
     * @param {SourceListener} listener
     */
    addEventListener(type, listener) {
      let list = this.#listeners.get(type);
      if (!list) { this.#listeners.set(type, (list = [])); }
      list.push(listener);
    }

    /**
     * @param {string} type
     * @param {SourceListener} listener
     */
    removeEventListener(type, listener) {
      const list = this.#listeners.get(type) || [];
      const index = list.indexOf(listener);
      if (index >= 0) { list.splice(index, 1); }
    }

    close() {
      this.readyState = CLOSED;
      this.#client.close();
    }

    /** @param {State} state */
    #state(state) {
      if (state === "open" && this.readyState !== OPEN) {
        this.readyState = OPEN;
        this.#fire("open", { type: "open" });
      } else if ((state === "reconnecting" || state === "closed") && this.readyState !== CLOSED) {
        this.readyState = state === "closed" ? CLOSED : CONNECTING;
        this.#fire("error", { type: "error" });
      }
    }

    /**
     * @param {string} type
     * @param {SourceEvent} event
     */
    #fire(type, event) {
      // As EventSource: onopen, onerror and onmessage first; no other on... property.
      const handler =
        type === "open"
          ? this.onopen
          : type === "error"
            ? this.onerror
            : type === "message"
              ? this.onmessage
              : null;
      const listeners = (this.#listeners.get(type) || []).slice();
      if (typeof handler === "function") { listeners.unshift(handler); }
      listeners.forEach((listener) => {
        try {
          listener.call(this, event);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      });
    }
  }

  /**
   * Make htmx 2's SSE extension (htmx-ext-sse) open its streams through shared Clients,
   * so that every tab of the site holds one connection: SSEFlask.htmx(htmx, options).
   * @param {{createEventSource?: (url: string) => unknown}} htmx
   * @param {EventSourceOptions} [options]
   */
  function useWithHtmx(htmx, options) {
    htmx.createEventSource = (url) => new SharedEventSource(url, options);
  }

  if (typeof SharedWorkerGlobalScope === "function" && scope instanceof SharedWorkerGlobalScope) {
    runWorker();
  } else {
    /** @type {typeof scope & {SSEFlask?: object}} */ (scope).SSEFlask = {
      connect,
      stream,
      Client,
      Parser,
      version: PROTOCOL,
      EventSource: SharedEventSource,
      htmx: useWithHtmx,
    };
  }
})(self);

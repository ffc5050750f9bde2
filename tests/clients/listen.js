// Records what an EventSource implementation reports, for tests/test_clients.py: the same
// code runs in Node (eventsource, undici; see node_listen.mjs) and in Chromium.
// report() receives {kind: "open" | "error" | "event", t, ...}; events carry the type,
// data and lastEventId the client gives the page.
globalThis.listenSSE = function (EventSourceClass, url, types, report) {
  var source = new EventSourceClass(url);
  var now = function () { return Date.now() / 1000; };
  source.onopen = function () { report({ kind: "open", t: now() }); };
  source.onerror = function () { report({ kind: "error", t: now(), readyState: source.readyState }); };
  var record = function (event) {
    report({ kind: "event", t: now(), type: event.type, data: event.data, lastEventId: event.lastEventId });
  };
  source.onmessage = record;
  types.forEach(function (type) { if (type !== "message") { source.addEventListener(type, record); } });
  return source;
};

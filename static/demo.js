// The demo page: listen through sse-flask.js, show the connection, each message with its
// time, type and id, and publish from the form. Data is always inserted as text, never as
// HTML. Add ?share=leader (or worker, none) to the address to choose how tabs share.
(function () {
  "use strict";
  var urls = document.currentScript.dataset;
  var params = new URLSearchParams(location.search);
  var MAX_SHOWN = 500;
  var MODES = {
    worker: "shared by all tabs (SharedWorker)",
    leader: "shared by all tabs; this tab holds it",
    follower: "shared by all tabs; another tab holds it",
    direct: "this tab's own"
  };

  var $ = document.getElementById.bind(document);
  var statusEl = $("status");
  var detailEl = $("status-detail");
  var list = $("messages");
  var sayForm = $("say");
  var listenForm = $("listen");
  var formError = $("form-error");
  var shown = new Set();          // ids on the list: a resumed stream never shows one twice
  var client = null;

  function setStatus(state, detail) {
    statusEl.textContent = state;
    statusEl.className = "status " + state;
    detailEl.textContent = describe(state, detail || {});
    $("mode").textContent = client ? MODES[client.mode] || "–" : "–";
    $("mode").dataset.mode = client ? client.mode : "";
    document.body.dataset.state = state;
    if (state === "open") { refreshStats(); }
  }

  function describe(state, detail) {
    if (state === "open" || state === "connecting" && !detail.error) { return ""; }
    var text = detail.error || (detail.attempt > 1 ? "attempt " + detail.attempt : "");
    if (detail.retryIn != null) { text += (text ? "; " : "") + "retrying in " + (detail.retryIn / 1000).toFixed(1) + " s"; }
    return text;
  }

  function listen(channels) {
    if (client) { client.close(); }
    client = SSEFlask.connect({
      url: urls.events,
      channels: channels,
      share: params.get("share") || "auto",
      onstate: setStatus
    });
    client.on("*", show);
    $("say-channel").placeholder = client.channels[0];
    $("channels").value = client.channels.join(" ");
    setStatus(client.state, client.detail);
    // Keep the channels in the address, so that a reload or a shared link listens the same.
    var query = new URLSearchParams(params);
    query.delete("channel");
    client.channels.forEach(function (name) { query.append("channel", name); });
    history.replaceState(null, "", "?" + query.toString());
  }

  function show(data, event) {
    if (event.id && shown.has(event.id)) { return; }
    if (event.id) { shown.add(event.id); }
    var item = document.createElement("li");
    item.className = "message " + (event.type === "message" ? "" : "typed ") + (event.type === "missed" ? "missed" : "");
    item.dataset.type = event.type;
    item.dataset.id = event.id || "";

    var meta = document.createElement("div");
    meta.className = "meta";
    var time = document.createElement("time");
    var now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    var type = document.createElement("span");
    type.className = "type";
    type.textContent = event.type;
    var id = document.createElement("span");
    id.className = "id";
    id.textContent = "id " + (event.id || "none");
    meta.append(time, type, id);

    var body = document.createElement("pre");
    body.className = "data";
    body.textContent = event.data;
    item.append(meta, body);
    if (event.type === "missed") {
      var note = document.createElement("p");
      note.className = "note";
      note.textContent = "The server no longer holds every event since " + (data.last_event_id || "then") +
        " (it restarted, or they were too many): what it kept follows.";
      item.insertBefore(note, body);
    }
    list.prepend(item);
    while (list.children.length > MAX_SHOWN) {
      shown.delete(list.lastElementChild.dataset.id);
      list.lastElementChild.remove();
    }
    $("last-id").textContent = event.lastEventId || "–";
    updateCount();
  }

  function updateCount() {
    $("count").textContent = String(list.children.length);
    $("empty").hidden = list.children.length > 0;
  }

  // The number of streams this server process holds: one for all tabs of this browser.
  var statsTimer = null;
  function refreshStats() {
    clearTimeout(statsTimer);
    if (document.visibilityState !== "visible") { return; }
    fetch(urls.stats, { cache: "no-store" })
      .then(function (response) { return response.json(); })
      .then(function (stats) { $("consumers").textContent = String(stats.consumers); })
      .catch(function () { $("consumers").textContent = "–"; })
      .then(function () { statsTimer = setTimeout(refreshStats, 5000); });
  }
  document.addEventListener("visibilitychange", refreshStats);

  listenForm.addEventListener("submit", function (submit) {
    submit.preventDefault();
    var channels = $("channels").value.split(/[\s,]+/).filter(Boolean);
    if (channels.length) { listen(channels); }
  });

  sayForm.addEventListener("submit", function (submit) {
    submit.preventDefault();
    var fields = new FormData(sayForm);
    var body = { data: fields.get("data"), channel: fields.get("channel") || client.channels[0] };
    if (fields.get("event")) { body.event = fields.get("event"); }
    var button = sayForm.querySelector("button");
    button.disabled = true;
    fetch(urls.say, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) {
        formError.textContent = response.ok ? "" : answer.error;
        if (response.ok) { sayForm.elements.data.value = ""; }
      });
    }).catch(function (error) {
      formError.textContent = "not sent: " + error;
    }).then(function () {
      button.disabled = false;
      sayForm.elements.data.focus();
    });
  });

  $("clear").addEventListener("click", function () {
    list.replaceChildren();
    updateCount();
  });

  // "/" jumps to the message box, as on many sites; not while typing in a field.
  document.addEventListener("keydown", function (key) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (key.key === "/" && !typing && !key.ctrlKey && !key.metaKey && !key.altKey) {
      key.preventDefault();
      $("message").focus();
    }
  });

  updateCount();
  listen(params.getAll("channel").length ? params.getAll("channel") : ["default"]);
})();

// The demo page: listen through sse-flask.js, show the connection, each message with its
// time, type and id, and publish from the form; and an inbox, a private channel user:NAME
// opened with a signed token that expires and is renewed; and an answer, streamed from a
// job, that resumes after a drop. Data is always inserted as text,
// never as HTML. Add ?share=leader (or worker, none) to the address to choose how tabs share.
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
    params.delete("channel");
    client.channels.forEach(function (name) { params.append("channel", name); });
    history.replaceState(null, "", "?" + params.toString());
  }

  function show(data, event) {
    if (event.id && shown.has(event.id)) { return; }
    if (event.id) { shown.add(event.id); }
    list.prepend(render(data, event));
    while (list.children.length > MAX_SHOWN) {
      shown.delete(list.lastElementChild.dataset.id);
      list.lastElementChild.remove();
    }
    $("last-id").textContent = event.lastEventId || "–";
    updateCount();
  }

  // One message as a list item: its time, type and id, then its data, all as text.
  function render(data, event) {
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
    return item;
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
    send(sayForm, body, formError);
  });

  // POST body to /say from form; empty its data field once sent, or show why not.
  function send(form, body, errorEl, url) {
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    fetch(url || urls.say, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) {
        errorEl.textContent = response.ok ? "" : answer.error;
        if (response.ok) { form.elements.data.value = ""; }
      });
    }).catch(function (error) {
      errorEl.textContent = "not sent: " + error;
    }).then(function () {
      button.disabled = false;
      form.elements.data.focus();
    });
  }

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

  // ---------------------------------------------------------------- the inbox

  // user:NAME is private: /events opens it only with a token the server signed, which
  // /inbox-token hands out. The server ends the stream when the token expires; the inbox
  // then fetches a new one and reconnects from the last event it had, missing nothing.
  var inbox = {
    user: "",
    client: null,
    expiresAt: 0,         // by this page's clock, never later than the server's expiry
    opened: false,        // whether the current token has opened a stream
    lastEventId: "",
    generation: 0,        // bumped by every new token request; older answers are ignored
    failures: 0,
    timer: null,
    shown: new Set(),
    list: $("inbox-messages")
  };

  function openInbox(user) {
    if (user !== inbox.user) {
      inbox.list.replaceChildren();
      inbox.shown.clear();
      inbox.lastEventId = "";
    }
    inbox.user = user;
    updateInboxCount();
    var channel = "user:" + user;
    $("inbox-user").value = user;
    $("inbox-channel").textContent = channel;
    $("inbox-say").hidden = false;
    $("inbox-curl").querySelector("code").textContent = "curl " +
      new URL(urls.inboxSay, location.href).href + " -H 'Content-Type: application/json' -d '" +
      JSON.stringify({ user: user, data: "hi" }) + "'";
    params.set("inbox", user);
    history.replaceState(null, "", "?" + params.toString());
    inbox.failures = 0;
    closeInboxStream();
    fetchToken(false);
  }

  // Ask for a token, then open the stream with it; renewing: the last one has expired.
  function fetchToken(renewing) {
    var generation = ++inbox.generation;
    clearTimeout(inbox.timer);
    setInboxStatus(renewing ? "reconnecting" : "connecting", renewing ? "asking for a new token" : "asking for a token");
    var asked = Date.now();
    fetch(urls.inboxToken + "?user=" + encodeURIComponent(inbox.user), { cache: "no-store" })
      .then(function (response) {
        return response.json().then(function (answer) {
          if (response.ok) { return answer; }
          var refusal = new Error("HTTP " + response.status + ": " + answer.error);
          refusal.refused = true;
          throw refusal;
        });
      })
      .then(function (answer) {
        if (generation !== inbox.generation) { return; }
        inbox.failures = 0;
        inbox.expiresAt = asked + answer.expires_in * 1000;
        connectInbox(answer);
      })
      .catch(function (error) {
        if (generation !== inbox.generation) { return; }
        if (error.refused) {
          // A name the server will not take: nothing to send to either.
          inbox.user = "";
          $("inbox-say").hidden = true;
          updateInboxCount();
          setInboxStatus("closed", error.message);
          return;
        }
        // The server is out of reach (restarting, say): ask again, less and less often.
        var delay = Math.min(30000, 1000 * Math.pow(2, inbox.failures++));
        setInboxStatus("reconnecting", "no token (" + (error.message || error) + "); retrying in " + (delay / 1000).toFixed(1) + " s");
        inbox.timer = setTimeout(function () { fetchToken(renewing); }, delay);
      });
  }

  function closeInboxStream() {
    var old = inbox.client;
    inbox.client = null;
    if (old) { old.close(); }
  }

  function connectInbox(answer) {
    closeInboxStream();
    inbox.opened = false;
    var client = SSEFlask.connect({
      url: urls.events + "?token=" + encodeURIComponent(answer.token),
      channels: [answer.channel],
      share: params.get("share") || "auto",
      lastEventId: inbox.lastEventId,
      onstate: function (state, detail) {
        if (client === inbox.client) { inboxState(state, detail); }
      }
    });
    inbox.client = client;
    client.on("*", showInInbox);
    inboxState(client.state, client.detail);
  }

  function inboxState(state, detail) {
    if (state === "open") { inbox.opened = true; }
    // The server closed the stream at expiry (or refuses the token: expired, or signed
    // with the key of a server since restarted): a new token, rather than retrying with
    // the old one. Only for a token that worked, so that a refused new one is not a loop.
    var expired = state === "reconnecting" && Date.now() >= inbox.expiresAt;
    var refused = state === "closed" && detail.status === 403;
    if (inbox.opened && (expired || refused)) {
      closeInboxStream();
      fetchToken(true);
      return;
    }
    var text = describe(state, detail);
    if (state === "open") {
      text = "token valid until " + new Date(inbox.expiresAt).toLocaleTimeString();
    } else if (refused && /not one this server signed/.test(detail.error || "")) {
      text += " (several server processes? Give them one SECRET_KEY)";
    }
    setInboxStatus(state, text);
  }

  function setInboxStatus(state, detail) {
    var status = $("inbox-status");
    status.textContent = state;
    status.className = "status small " + state;
    $("inbox-detail").textContent = detail || "";
  }

  function showInInbox(data, event) {
    if (event.lastEventId) { inbox.lastEventId = event.lastEventId; }
    if (event.id && inbox.shown.has(event.id)) { return; }
    if (event.id) { inbox.shown.add(event.id); }
    inbox.list.prepend(render(data, event));
    while (inbox.list.children.length > MAX_SHOWN) {
      inbox.shown.delete(inbox.list.lastElementChild.dataset.id);
      inbox.list.lastElementChild.remove();
    }
    updateInboxCount();
  }

  function updateInboxCount() {
    $("inbox-count").textContent = String(inbox.list.children.length);
    $("inbox-empty").hidden = !inbox.user || inbox.list.children.length > 0;
  }

  $("inbox-open").addEventListener("submit", function (submit) {
    submit.preventDefault();
    var user = $("inbox-user").value.trim();
    if (!user) { return; }
    openInbox(user);
    $("inbox-message").focus();
  });

  $("inbox-say").addEventListener("submit", function (submit) {
    submit.preventDefault();
    var body = { data: $("inbox-message").value, user: inbox.user };
    send($("inbox-say"), body, $("inbox-error"), urls.inboxSay);
  });

  // ---------------------------------------------------------------- the answer

  // POST /answer starts the fake model as a job and answers its channel and token; the
  // page streams the job's channel. "Drop the connection" cuts it as a network failure
  // would: the helper reconnects with the id of the last word and the server replays what
  // was missed (marked), so the text ends whole, with nothing repeated or missing.
  var answer = { client: null, words: [], dropped: 0, reopenedAt: 0, channel: "" };

  function ask(question) {
    closeAnswer();
    answer.words = [];
    answer.dropped = 0;
    $("answer-text").replaceChildren();
    $("answer-error").textContent = "";
    updateAnswer();
    setAnswerStatus("connecting", "starting the job");
    fetch(urls.answer, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question: question })
    }).then(function (response) {
      return response.json().then(function (job) {
        if (!response.ok) { throw new Error("HTTP " + response.status + ": " + job.error); }
        streamAnswer(job);
      });
    }).catch(function (error) {
      setAnswerStatus("closed", null);
      $("answer-error").textContent = "not started: " + (error.message || error);
    });
  }

  function streamAnswer(job) {
    answer.channel = job.channel;
    var client = answer.client = SSEFlask.connect({
      url: urls.events + "?token=" + encodeURIComponent(job.token),
      channels: [job.channel],
      share: "none",
      onstate: function (state, detail) {
        if (client !== answer.client) { return; }
        if (state === "open" && answer.dropped) { answer.reopenedAt = Date.now(); }
        $("answer-drop").disabled = $("answer-stop").disabled = state === "closed";
        // Closed: the last event (done, cancelled or error) has said why.
        setAnswerStatus(state, state === "closed" ? null : describe(state, detail));
      }
    });
    client.on("message", function (word) { addWord(word); });
    // The words are text; the ends carry JSON.
    client.on("done", function (text) {
      var data = JSON.parse(text);
      var whole = data.items === answer.words.length;
      $("answer-detail").textContent = "done: " + answer.words.length + " words of " + data.items +
        (whole ? ", nothing repeated or missing" : ": some are missing") + dropNote();
    });
    client.on("cancelled", function (text) {
      $("answer-detail").textContent = "stopped after " + JSON.parse(text).items + " words";
    });
    client.on("error", function (text) { $("answer-error").textContent = JSON.parse(text).error; });
    client.on("missed", function () {
      $("answer-error").textContent = "the server no longer had every word";
    });
  }

  function addWord(word) {
    answer.words.push(word);
    var span = document.createElement("span");
    span.textContent = (answer.words.length > 1 ? " " : "") + word;
    // Replayed after a reconnection: the words that came in one burst right after it.
    if (answer.reopenedAt && Date.now() - answer.reopenedAt < 100) { span.className = "resumed"; }
    $("answer-text").append(span);
    updateAnswer();
  }

  function dropNote() {
    if (!answer.dropped) { return ""; }
    return "; dropped " + answer.dropped + "×, resumed each time (replayed words marked)";
  }

  function updateAnswer() {
    $("answer-count").textContent = String(answer.words.length);
  }

  function setAnswerStatus(state, detail) {
    var status = $("answer-status");
    status.textContent = state;
    status.className = "status small " + state;
    if (detail !== null) { $("answer-detail").textContent = detail || ""; }
  }

  function closeAnswer() {
    if (answer.client) { answer.client.close(); }
    answer.client = null;
  }

  $("answer-ask").addEventListener("submit", function (submit) {
    submit.preventDefault();
    var question = $("answer-question").value.trim();
    if (question) { ask(question); }
  });

  $("answer-drop").addEventListener("click", function () {
    if (!answer.client || answer.client.state !== "open") { return; }
    answer.dropped++;
    answer.client.drop();
  });

  $("answer-stop").addEventListener("click", function () {
    fetch(urls.answerCancel, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channel: answer.channel })
    });
  });

  updateCount();
  listen(params.getAll("channel").length ? params.getAll("channel") : ["default"]);
  if (params.get("inbox")) { openInbox(params.get("inbox")); }
})();

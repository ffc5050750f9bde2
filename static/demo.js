// The demo page: listen through sse-flask.js, show the connection, each message with its
// time, type and id, and publish from the form; and an inbox, a private channel user:NAME
// opened with a signed token that expires and is renewed; and an answer, streamed from a
// job, that resumes after a drop. Data is always inserted as text,
// never as HTML. Add ?share=leader (or worker, none) to the address to choose how tabs share.
(() => {
  "use strict";
  const urls = document.currentScript.dataset;
  const params = new URLSearchParams(location.search);
  const MAX_SHOWN = 500;
  const MODES = {
    worker: "shared by all tabs (SharedWorker)",
    leader: "shared by all tabs; this tab holds it",
    follower: "shared by all tabs; another tab holds it",
    direct: "this tab's own",
  };

  const $ = document.getElementById.bind(document);
  const statusEl = $("status");
  const detailEl = $("status-detail");
  const sayForm = $("say");
  const listenForm = $("listen");
  const formError = $("form-error");
  let client = null;

  // ---------------------------------------------------------------- the lists

  // A list of events, newest first, each id once (a resumed stream never shows one twice),
  // at most MAX_SHOWN, with its count; the messages' and the inbox's. `inUse` says whether
  // the empty list's hint shows.
  class Feed {
    constructor(prefix, inUse = () => true) {
      this.list = $(`${prefix}messages`);
      this.count = $(`${prefix}count`);
      this.empty = $(`${prefix}empty`);
      this.inUse = inUse;
      this.shown = new Set();
    }

    // Show an event at the top, unless it is on the list already: whether it was shown.
    show(data, event) {
      if (event.id && this.shown.has(event.id)) { return false; }
      if (event.id) { this.shown.add(event.id); }
      this.list.prepend(render(data, event));
      while (this.list.children.length > MAX_SHOWN) {
        this.shown.delete(this.list.lastElementChild.dataset.id);
        this.list.lastElementChild.remove();
      }
      this.updateCount();
      return true;
    }

    // Empty the list; forget: and the ids shown, for another stream's events.
    clear(forget = false) {
      this.list.replaceChildren();
      if (forget) { this.shown.clear(); }
      this.updateCount();
    }

    updateCount() {
      this.count.textContent = String(this.list.children.length);
      this.empty.hidden = !this.inUse() || this.list.children.length > 0;
    }
  }

  // One message as a list item: its time, type and id, then its data, all as text.
  function render(data, event) {
    const item = document.createElement("li");
    item.className = "message " + (event.type === "message" ? "" : "typed ") +
      (event.type === "missed" ? "missed" : "");
    item.dataset.type = event.type;
    item.dataset.id = event.id || "";

    const meta = document.createElement("div");
    meta.className = "meta";
    const time = document.createElement("time");
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = event.type;
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = `id ${event.id || "none"}`;
    meta.append(time, type, id);

    const body = document.createElement("pre");
    body.className = "data";
    body.textContent = event.data;
    item.append(meta, body);
    if (event.type === "missed") {
      const note = document.createElement("p");
      note.className = "note";
      const since = data.last_event_id || "then";
      note.textContent = `The server no longer holds every event since ${since}` +
        " (it restarted, or they were too many): what it kept follows.";
      item.insertBefore(note, body);
    }
    return item;
  }

  // ---------------------------------------------------------------- the messages

  const messages = new Feed("");

  function setStatus(state, detail) {
    statusEl.textContent = state;
    statusEl.className = `status ${state}`;
    detailEl.textContent = describe(state, detail || {});
    $("mode").textContent = client ? MODES[client.mode] || "–" : "–";
    $("mode").dataset.mode = client ? client.mode : "";
    document.body.dataset.state = state;
    if (state === "open") { refreshStats(); }
  }

  function describe(state, detail) {
    if (state === "open" || state === "connecting" && !detail.error) { return ""; }
    let text = detail.error || (detail.attempt > 1 ? `attempt ${detail.attempt}` : "");
    if (detail.retryIn != null) {
      text += `${text ? "; " : ""}retrying in ${(detail.retryIn / 1000).toFixed(1)} s`;
    }
    return text;
  }

  function listen(channels) {
    if (client) { client.close(); }
    client = SSEFlask.connect({
      url: urls.events,
      channels,
      share: params.get("share") || "auto",
      onstate: setStatus,
    });
    client.on("*", show);
    $("say-channel").placeholder = client.channels[0];
    $("channels").value = client.channels.join(" ");
    setStatus(client.state, client.detail);
    // Keep the channels in the address, so that a reload or a shared link listens the same.
    params.delete("channel");
    client.channels.forEach((name) => params.append("channel", name));
    history.replaceState(null, "", `?${params}`);
  }

  function show(data, event) {
    if (messages.show(data, event)) { $("last-id").textContent = event.lastEventId || "–"; }
  }

  // The number of streams this server process holds: one for all tabs of this browser.
  let statsTimer = null;
  async function refreshStats() {
    clearTimeout(statsTimer);
    if (document.visibilityState !== "visible") { return; }
    try {
      const response = await fetch(urls.stats, { cache: "no-store" });
      const stats = await response.json();
      $("consumers").textContent = String(stats.consumers);
    } catch {
      $("consumers").textContent = "–";
    }
    statsTimer = setTimeout(refreshStats, 5000);
  }
  document.addEventListener("visibilitychange", refreshStats);

  listenForm.addEventListener("submit", (submit) => {
    submit.preventDefault();
    const channels = $("channels").value.split(/[\s,]+/).filter(Boolean);
    if (channels.length) { listen(channels); }
  });

  sayForm.addEventListener("submit", (submit) => {
    submit.preventDefault();
    const fields = new FormData(sayForm);
    const body = { data: fields.get("data"), channel: fields.get("channel") || client.channels[0] };
    if (fields.get("event")) { body.event = fields.get("event"); }
    send(sayForm, body, formError);
  });

  // POST body to /say from form; empty its data field once sent, or show why not.
  async function send(form, body, errorEl, url) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch(url || urls.say, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      errorEl.textContent = response.ok ? "" : answer.error;
      if (response.ok) { form.elements.data.value = ""; }
    } catch (error) {
      errorEl.textContent = `not sent: ${error}`;
    }
    button.disabled = false;
    form.elements.data.focus();
  }

  $("clear").addEventListener("click", () => messages.clear());

  // "/" jumps to the message box, as on many sites; not while typing in a field.
  document.addEventListener("keydown", (key) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (key.key === "/" && !typing && !key.ctrlKey && !key.metaKey && !key.altKey) {
      key.preventDefault();
      $("message").focus();
    }
  });

  // ---------------------------------------------------------------- the inbox

  // user:NAME is private: /events opens it only with a token the server signed, which
  // /inbox-token hands out. The server ends the stream when the token expires; the inbox
  // then fetches a new one and reconnects from the last event it had, missing nothing.
  const inbox = {
    user: "",
    client: null,
    expiresAt: 0, // by this page's clock, never later than the server's expiry
    opened: false, // whether the current token has opened a stream
    lastEventId: "",
    generation: 0, // bumped by every new token request; older answers are ignored
    failures: 0,
    timer: null,
    feed: new Feed("inbox-", () => Boolean(inbox.user)),
  };

  // The server would not hand out a token: for a name it will not take.
  class Refusal extends Error {}

  function openInbox(user) {
    if (user !== inbox.user) {
      inbox.feed.clear(true);
      inbox.lastEventId = "";
    }
    inbox.user = user;
    inbox.feed.updateCount();
    const channel = `user:${user}`;
    $("inbox-user").value = user;
    $("inbox-channel").textContent = channel;
    $("inbox-say").hidden = false;
    const sayUrl = new URL(urls.inboxSay, location.href).href;
    $("inbox-curl").querySelector("code").textContent = `curl ${sayUrl}` +
      ` -H 'Content-Type: application/json' -d '${JSON.stringify({ user, data: "hi" })}'`;
    params.set("inbox", user);
    history.replaceState(null, "", `?${params}`);
    inbox.failures = 0;
    closeInboxStream();
    fetchToken(false);
  }

  // Ask for a token, then open the stream with it; renewing: the last one has expired.
  async function fetchToken(renewing) {
    const generation = ++inbox.generation;
    clearTimeout(inbox.timer);
    setInboxStatus(
      renewing ? "reconnecting" : "connecting",
      renewing ? "asking for a new token" : "asking for a token",
    );
    const asked = Date.now();
    try {
      const response = await fetch(`${urls.inboxToken}?user=${encodeURIComponent(inbox.user)}`, {
        cache: "no-store",
      });
      const answer = await response.json();
      if (!response.ok) { throw new Refusal(`HTTP ${response.status}: ${answer.error}`); }
      if (generation !== inbox.generation) { return; }
      inbox.failures = 0;
      inbox.expiresAt = asked + answer.expires_in * 1000;
      connectInbox(answer);
    } catch (error) {
      if (generation !== inbox.generation) { return; }
      if (error instanceof Refusal) {
        // A name the server will not take: nothing to send to either.
        inbox.user = "";
        $("inbox-say").hidden = true;
        inbox.feed.updateCount();
        setInboxStatus("closed", error.message);
        return;
      }
      // The server is out of reach (restarting, say): ask again, less and less often.
      const delay = Math.min(30000, 1000 * 2 ** inbox.failures++);
      setInboxStatus(
        "reconnecting",
        `no token (${error.message || error}); retrying in ${(delay / 1000).toFixed(1)} s`,
      );
      inbox.timer = setTimeout(() => fetchToken(renewing), delay);
    }
  }

  function closeInboxStream() {
    const old = inbox.client;
    inbox.client = null;
    if (old) { old.close(); }
  }

  function connectInbox(answer) {
    closeInboxStream();
    inbox.opened = false;
    // Unset while connect() reports its first state, which is then not this inbox's yet.
    let client;
    client = SSEFlask.connect({
      url: `${urls.events}?token=${encodeURIComponent(answer.token)}`,
      channels: [answer.channel],
      share: params.get("share") || "auto",
      lastEventId: inbox.lastEventId,
      onstate: (state, detail) => {
        if (client === inbox.client) { inboxState(state, detail); }
      },
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
    const expired = state === "reconnecting" && Date.now() >= inbox.expiresAt;
    const refused = state === "closed" && detail.status === 403;
    if (inbox.opened && (expired || refused)) {
      closeInboxStream();
      fetchToken(true);
      return;
    }
    let text = describe(state, detail);
    if (state === "open") {
      text = `token valid until ${new Date(inbox.expiresAt).toLocaleTimeString()}`;
    } else if (refused && /not one this server signed/.test(detail.error || "")) {
      text += " (several server processes? Give them one SECRET_KEY)";
    }
    setInboxStatus(state, text);
  }

  function setInboxStatus(state, detail) {
    const status = $("inbox-status");
    status.textContent = state;
    status.className = `status small ${state}`;
    $("inbox-detail").textContent = detail || "";
  }

  function showInInbox(data, event) {
    if (event.lastEventId) { inbox.lastEventId = event.lastEventId; }
    inbox.feed.show(data, event);
  }

  $("inbox-open").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const user = $("inbox-user").value.trim();
    if (!user) { return; }
    openInbox(user);
    $("inbox-message").focus();
  });

  $("inbox-say").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const body = { data: $("inbox-message").value, user: inbox.user };
    send($("inbox-say"), body, $("inbox-error"), urls.inboxSay);
  });

  // ---------------------------------------------------------------- the answer

  // POST /answer starts the fake model as a job and answers its channel and token; the
  // page streams the job's channel. "Drop the connection" cuts it as a network failure
  // would: the helper reconnects with the id of the last word and the server replays what
  // was missed (marked), so the text ends whole, with nothing repeated or missing.
  const answer = { client: null, words: [], dropped: 0, reopenedAt: 0, channel: "" };

  async function ask(question) {
    closeAnswer();
    answer.words = [];
    answer.dropped = 0;
    $("answer-text").replaceChildren();
    $("answer-error").textContent = "";
    updateAnswer();
    setAnswerStatus("connecting", "starting the job");
    try {
      const response = await fetch(urls.answer, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question }),
      });
      const job = await response.json();
      if (!response.ok) { throw new Error(`HTTP ${response.status}: ${job.error}`); }
      streamAnswer(job);
    } catch (error) {
      setAnswerStatus("closed", null);
      $("answer-error").textContent = `not started: ${error.message || error}`;
    }
  }

  function streamAnswer(job) {
    answer.channel = job.channel;
    // Unset while connect() reports its first state, which is then not this answer's yet.
    let client;
    client = answer.client = SSEFlask.connect({
      url: `${urls.events}?token=${encodeURIComponent(job.token)}`,
      channels: [job.channel],
      share: "none",
      onstate: (state, detail) => {
        if (client !== answer.client) { return; }
        if (state === "open" && answer.dropped) { answer.reopenedAt = Date.now(); }
        $("answer-drop").disabled = $("answer-stop").disabled = state === "closed";
        // Closed: the last event (done, cancelled or error) has said why.
        setAnswerStatus(state, state === "closed" ? null : describe(state, detail));
      },
    });
    client.on("message", (word) => addWord(word));
    // The words are text; the ends carry JSON.
    client.on("done", (text) => {
      const data = JSON.parse(text);
      const whole = data.items === answer.words.length;
      $("answer-detail").textContent = `done: ${answer.words.length} words of ${data.items}` +
        (whole ? ", nothing repeated or missing" : ": some are missing") + dropNote();
    });
    client.on("cancelled", (text) => {
      $("answer-detail").textContent = `stopped after ${JSON.parse(text).items} words`;
    });
    client.on("error", (text) => { $("answer-error").textContent = JSON.parse(text).error; });
    client.on("missed", () => {
      $("answer-error").textContent = "the server no longer had every word";
    });
  }

  function addWord(word) {
    answer.words.push(word);
    const span = document.createElement("span");
    span.textContent = (answer.words.length > 1 ? " " : "") + word;
    // Replayed after a reconnection: the words that came in one burst right after it.
    if (answer.reopenedAt && Date.now() - answer.reopenedAt < 100) { span.className = "resumed"; }
    $("answer-text").append(span);
    updateAnswer();
  }

  function dropNote() {
    if (!answer.dropped) { return ""; }
    return `; dropped ${answer.dropped}×, resumed each time (replayed words marked)`;
  }

  function updateAnswer() {
    $("answer-count").textContent = String(answer.words.length);
  }

  function setAnswerStatus(state, detail) {
    const status = $("answer-status");
    status.textContent = state;
    status.className = `status small ${state}`;
    if (detail !== null) { $("answer-detail").textContent = detail || ""; }
  }

  function closeAnswer() {
    if (answer.client) { answer.client.close(); }
    answer.client = null;
  }

  $("answer-ask").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const question = $("answer-question").value.trim();
    if (question) { ask(question); }
  });

  $("answer-drop").addEventListener("click", () => {
    if (!answer.client || answer.client.state !== "open") { return; }
    answer.dropped++;
    answer.client.drop();
  });

  $("answer-stop").addEventListener("click", () => {
    fetch(urls.answerCancel, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channel: answer.channel }),
    });
  });

  messages.updateCount();
  listen(params.getAll("channel").length ? params.getAll("channel") : ["default"]);
  if (params.get("inbox")) { openInbox(params.get("inbox")); }
})();

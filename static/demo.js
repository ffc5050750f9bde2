// The demo page: listen with EventSource, show the connection state and each message,
// and publish from the form. Data is always inserted as text, never as HTML.
(function () {
  "use strict";
  var script = document.currentScript;
  var statusEl = document.getElementById("status");
  var list = document.getElementById("messages");
  var form = document.getElementById("say");
  var formError = document.getElementById("form-error");

  function setStatus(state) {
    statusEl.textContent = state;
    statusEl.className = "status " + state;
  }

  function show(type, event) {
    var item = document.createElement("li");
    item.className = "message";
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = new Date().toLocaleTimeString() + " · " + type + " · id " + (event.lastEventId || "none");
    var data = document.createElement("pre");
    data.className = "data";
    data.textContent = event.data;
    item.append(meta, data);
    list.prepend(item);
  }

  var source = new EventSource(script.dataset.events);
  var types = ["message", "missed"];
  source.onopen = function () { setStatus("open"); };
  source.onerror = function () {
    setStatus(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  };
  types.forEach(function (type) {
    source.addEventListener(type, function (event) { show(type, event); });
  });

  form.addEventListener("submit", function (submit) {
    submit.preventDefault();
    var fields = new FormData(form);
    var body = { data: fields.get("data") };
    if (fields.get("event")) { body.event = fields.get("event"); }
    if (types.indexOf(body.event || "message") < 0) {
      types.push(body.event);
      source.addEventListener(body.event, function (event) { show(body.event, event); });
    }
    fetch(script.dataset.say, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) {
        formError.textContent = response.ok ? "" : answer.error;
        if (response.ok) { form.elements.data.value = ""; }
      });
    }).catch(function (error) { formError.textContent = String(error); });
  });
})();

// wis2l studio: the live panel (Server-Sent Events) and the status poll. No build step.
(function () {
  "use strict";
  function text(tag, cls, value) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value;
    return el;
  }
  function startLive() {
    var list = document.getElementById("live");
    if (!list || !window.EventSource) return;
    var state = document.getElementById("live-state");
    var source = new EventSource("/live");
    source.onopen = function () { state.textContent = "connected"; state.className = "badge health-ok"; };
    source.onerror = function () { state.textContent = "reconnecting…"; state.className = "badge health-degraded"; };
    source.addEventListener("nats", function (msg) {
      var item = JSON.parse(msg.data);
      var li = document.createElement("li");
      li.dataset.type = item.type || "";
      li.appendChild(text("span", "type", item.type || item.subject));
      li.appendChild(text("time", "muted", new Date().toLocaleTimeString() + " "));
      var payload = item.payload ? Object.assign({}, item.payload) : {};
      delete payload.id; delete payload.type; delete payload.occurred_at;
      li.appendChild(text("span", "", item.error || (item.dead_letter ? "dead letter" : JSON.stringify(payload))));
      list.insertBefore(li, list.firstChild);
      while (list.children.length > 200) list.removeChild(list.lastChild);
      var empty = document.getElementById("live-empty");
      if (empty) empty.remove();
    });
  }
  function pollStatus() {
    var backlog = document.getElementById("backlog");
    var health = document.getElementById("health");
    if (!backlog || !health) return;
    setInterval(function () {
      fetch("/status.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (s) {
        health.textContent = s.health.status;
        health.className = "badge health-" + s.health.status;
        var live = document.getElementById("live-state");
        if (live && s.live === false) { live.textContent = "NATS not connected"; live.className = "badge health-unhealthy"; }
        if (s.outbox.size !== undefined) {
          var age = s.outbox.oldest_age_s == null ? "" : ", oldest " + s.outbox.oldest_age_s.toFixed(1) + " s";
          backlog.textContent = s.outbox.size + (s.outbox.size === 1 ? " event" : " events") + " waiting" + age;
        }
      }).catch(function () {});
    }, 5000);
  }
  function confirmDeletes() {
    document.querySelectorAll("form.delete").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm("Delete this row (through its repository)?")) e.preventDefault();
      });
    });
  }
  function backLinks() {  // no inline script (CSP): "Back" goes back when there is a page to go to
    document.querySelectorAll("a.back").forEach(function (link) {
      link.addEventListener("click", function (e) {
        if (window.history.length > 1) { e.preventDefault(); window.history.back(); }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { startLive(); pollStatus(); confirmDeletes(); backLinks(); });
})();
